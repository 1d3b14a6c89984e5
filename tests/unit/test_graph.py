"""The entity/link graph (replicator/graph.py) is the domain schema's: every domain table is routed, every link
table's columns are its foreign keys, and both sides of a link show it. Adding a table to schema/domain.py
without the graph fails here, not as a silently stale document."""

from __future__ import annotations

import schema.domain  # noqa: F401  (registers the domain tables on Base.metadata)
from replicator import graph
from schema.base import Base

DOMAIN_TABLES = {t.name: t for t in Base.metadata.sorted_tables if t.schema in (None, "public")}


def _foreign_key(table: str, column: str) -> str:
    (fk,) = DOMAIN_TABLES[table].c[column].foreign_keys
    return fk.column.table.name


def test_every_domain_table_is_carried_by_the_stream() -> None:
    assert set(graph.SOURCE_TABLES) == set(DOMAIN_TABLES)


def test_entities_are_tables_and_links_and_children_point_at_them_through_their_foreign_keys() -> None:
    assert set(graph.ENTITIES) <= set(DOMAIN_TABLES)
    for link in graph.LINKS:
        assert _foreign_key(link.table, link.left_column) == link.left
        assert _foreign_key(link.table, link.right_column) == link.right
    for child in graph.CHILDREN:
        assert _foreign_key(child.table, child.column) == child.entity
        assert _foreign_key(child.table, "feature_id") == graph.FEATURE_TABLE


def test_every_link_is_shown_by_both_sides_and_roles_are_unique_per_entity() -> None:
    for link in graph.LINKS:
        assert link.table in {r.link for r in graph.RELATIONS[link.left] if r.other == link.right}
        assert link.table in {r.link for r in graph.RELATIONS[link.right] if r.other == link.left}
    for entity, relations in graph.RELATIONS.items():
        roles = [r.role for r in relations]
        assert len(roles) == len(set(roles)), entity
        assert [graph.ENTITIES.index(r.other) for r in relations] == sorted(
            graph.ENTITIES.index(r.other) for r in relations
        )


def test_a_link_row_dirties_both_sides_and_a_child_row_its_owner() -> None:
    assert graph.PARENTS["program_dataset"] == (("program", "program_id"), ("dataset", "dataset_id"))
    assert graph.PARENTS["signature_component"] == (("signature", "signature_id"),)
    assert graph.PARENTS["experiment"] == (("experiment", "id"),)
