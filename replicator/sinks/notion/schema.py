"""The Notion side of the data model: one database per entity, the properties the sink writes (names as the team
knows them, original-system.md §4) with their types, and ``init_databases`` that creates the four databases.

Relations are two-way (``dual_property``) and each pair is WRITTEN from one side only, the side further down the
dependency order program → experiment → signature → dataset; Notion fills the other side. That keeps the wait for
relation targets acyclic: a dataset may wait for its signature's page, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Entities in the order their pages can be created (relation targets first).
CREATE_ORDER = ("program", "experiment", "signature", "dataset")

POSTGRES_ID = "Postgres ID"
CONTENT_HASH = "Content Hash"


@dataclass(frozen=True)
class RelationSpec:
    """A relation the sink writes: property ``name`` → pages of ``target`` (entity), from the document's relation
    ``role``; ``synced_name`` is the property Notion keeps in step on the target's database."""

    name: str
    target: str
    role: str
    synced_name: str


@dataclass(frozen=True)
class DatabaseSpec:
    entity: str
    title: str  # the database's title in Notion
    env_var: str  # the setting that names its id
    title_property: str
    properties: tuple[tuple[str, str], ...]  # (name, type) of every non-relation property the sink writes
    relations: tuple[RelationSpec, ...] = ()

    def property_types(self) -> dict[str, str]:
        """Every property the sink writes, by name → Notion type (title and relations included)."""
        out = {self.title_property: "title"}
        out.update(dict(self.properties))
        out.update({r.name: "relation" for r in self.relations})
        return out


_OWNED = ((POSTGRES_ID, "rich_text"), (CONTENT_HASH, "rich_text"))

DATABASES: dict[str, DatabaseSpec] = {
    "program": DatabaseSpec(
        entity="program",
        title="Programs",
        env_var="NOTION_PROGRAMS_DB_ID",
        title_property="Name",
        properties=(("Description", "rich_text"), ("Disease", "multi_select"), *_OWNED),
    ),
    "experiment": DatabaseSpec(
        entity="experiment",
        title="Experiments",
        env_var="NOTION_EXPERIMENTS_DB_ID",
        title_property="Name",
        properties=(
            ("Type", "select"),
            ("Description", "rich_text"),
            ("Disease", "multi_select"),
            ("Matrix", "multi_select"),
            ("Model Systems", "multi_select"),
            ("Targets", "multi_select"),
            ("Modality", "multi_select"),
            ("Biomarker Role", "multi_select"),
            ("Phenotype Axes", "multi_select"),
            ("Treatment Arms", "multi_select"),
            ("Stage", "select"),
            *_OWNED,
        ),
        relations=(RelationSpec("Related Programs", "program", "programs", "Related Experiments"),),
    ),
    "signature": DatabaseSpec(
        entity="signature",
        title="Signatures",
        env_var="NOTION_SIGNATURE_DB_ID",
        title_property="Name",
        properties=(
            ("Short ID", "rich_text"),
            ("Description", "rich_text"),
            ("Modalities", "multi_select"),
            ("Data Ownership", "select"),
            *_OWNED,
        ),
        relations=(RelationSpec("Related Programs", "program", "programs", "Related Signatures"),),
    ),
    "dataset": DatabaseSpec(
        entity="dataset",
        title="Experimental Data Assets",
        env_var="NOTION_EXP_DATA_DB_ID",
        title_property="Experiment Name",
        properties=(
            ("Omics Type", "select"),
            ("Data Origin", "select"),
            ("Dataset Source Type", "select"),
            ("Summary", "rich_text"),
            ("Methods", "rich_text"),
            ("Results", "rich_text"),
            ("Conclusions", "rich_text"),
            ("Model Systems", "multi_select"),
            ("Disease", "multi_select"),
            ("Matrix", "multi_select"),
            ("Source URL / DOI", "url"),
            ("Signature Match Score", "number"),
            *_OWNED,
        ),
        relations=(
            RelationSpec("Related Signature(s)", "signature", "signatures", "Related Datasets"),
            RelationSpec("Related Programs", "program", "programs", "Related Datasets"),
            RelationSpec("Related Experiments", "experiment", "experiments", "Related Datasets"),
        ),
    ),
}

ENV_VARS = tuple(DATABASES[e].env_var for e in CREATE_ORDER)


def schema_problems(spec: DatabaseSpec, properties: dict[str, Any], data_sources: dict[str, str]) -> list[str]:
    """What is wrong with a data source's ``properties`` (the API's schema object, by name) for ``spec``: every
    missing property, wrong type, and relation pointing at another data source than the target entity's
    (``data_sources``: entity → data source id, as resolved)."""
    problems: list[str] = []
    for name, kind in spec.property_types().items():
        found = properties.get(name)
        if not isinstance(found, dict):
            problems.append(f"missing property {name!r} ({kind})")
            continue
        if found.get("type") != kind:
            problems.append(f"property {name!r} is {found.get('type')}, expected {kind}")
    for relation in spec.relations:
        found = properties.get(relation.name)
        if not isinstance(found, dict) or found.get("type") != "relation":
            continue
        target = (found.get("relation") or {}).get("data_source_id")
        expected = data_sources.get(relation.target)
        if expected is not None and target != expected:
            problems.append(
                f"relation {relation.name!r} points at data source {target}, expected {expected} "
                f"({DATABASES[relation.target].title})"
            )
    return problems


def property_config(spec: DatabaseSpec, name: str, data_sources: dict[str, str]) -> dict[str, Any]:
    """The schema object of one property the sink writes (as ``databases.create`` and ``data_sources.update``
    take it); a relation needs its target in ``data_sources``."""
    if name == spec.title_property:
        return {"title": {}}
    for relation in spec.relations:
        if relation.name == name:
            return {
                "relation": {
                    "data_source_id": data_sources[relation.target],
                    "type": "dual_property",
                    "dual_property": {"synced_property_name": relation.synced_name},
                }
            }
    kind = dict(spec.properties)[name]
    if kind == "number":
        return {"number": {"format": "number"}}
    return {kind: {"options": []} if kind in ("select", "multi_select") else {}}


def missing_properties(spec: DatabaseSpec, properties: dict[str, Any]) -> list[str]:
    """Names of the properties the sink writes that a data source's schema (``properties``, by name) lacks."""
    return [name for name in spec.property_types() if not isinstance(properties.get(name), dict)]


def create_request(spec: DatabaseSpec, parent_page_id: str, data_sources: dict[str, str]) -> dict[str, Any]:
    """The body of ``databases.create`` for ``spec``; relation targets must already exist in ``data_sources``."""
    properties = {name: property_config(spec, name, data_sources) for name in spec.property_types()}
    return {
        "parent": {"type": "page_id", "page_id": parent_page_id},
        "title": [{"type": "text", "text": {"content": spec.title}}],
        "initial_data_source": {"properties": properties},
    }
