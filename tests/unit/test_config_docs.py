"""The operator documentation cannot drift from the code: every setting ``replicator.config.Settings`` reads (and
``POSTGRES_URL``, which ingest reads too), and every variable any module reads from the environment, has a row in
the configuration table of docs/operations.md with the code's default; the table names no setting that does not
exist; every Prometheus metric the replicator exports is named in the metrics section; every ``replicator``
command and option the guide shows exists in the CLI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import PydanticUndefined

from replicator.config import Settings
from replicator.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "operations.md"
# Variables the code may read that are not ours to document as settings (set by libraries, read by them).
NOT_SETTINGS: frozenset[str] = frozenset()


def _section(title: str) -> str:
    text = DOCS.read_text()
    match = re.search(rf"^## {re.escape(title)}\b.*?$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs/operations.md has no '## {title}' section"
    return match.group(1)


def _config_table() -> dict[str, tuple[str, str]]:
    """Variable name → (default cell, meaning cell) from the table rows of the Configuration section."""
    rows: dict[str, tuple[str, str]] = {}
    for line in _section("Configuration").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not (name := re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])):
            continue
        assert name.group(1) not in rows, f"{name.group(1)} has two rows"
        rows[name.group(1)] = (cells[1], cells[2])
    return rows


def _documented_default(value: Any) -> str:
    """How the table spells a default."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _env_reads_in_code() -> set[str]:
    """Names read with os.environ / os.getenv / a Typer envvar anywhere in ingest/ and replicator/."""
    pattern = re.compile(
        r"""os\.environ\.get\(\s*["']([A-Z][A-Z0-9_]*)["']"""
        r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\](?!\s*=)"""
        r"""|os\.getenv\(\s*["']([A-Z][A-Z0-9_]*)["']"""
        r"""|envvar\s*=\s*["']([A-Z][A-Z0-9_]*)["']"""
    )
    names: set[str] = set()
    for package in ("ingest", "replicator"):
        for path in (REPO / package).rglob("*.py"):
            for groups in pattern.findall(path.read_text()):
                names.update(g for g in groups if g)
    return names - NOT_SETTINGS


def test_every_setting_is_in_the_configuration_table() -> None:
    table = _config_table()
    aliases = {info.alias for info in Settings.model_fields.values() if info.alias}
    missing = sorted((aliases | {"POSTGRES_URL"} | _env_reads_in_code()) - set(table))
    assert not missing, f"docs/operations.md's configuration table lacks {missing}"


def test_the_configuration_table_names_only_real_settings() -> None:
    known = {info.alias for info in Settings.model_fields.values() if info.alias} | _env_reads_in_code()
    stale = sorted(set(_config_table()) - known)
    assert not stale, f"documented but read by nothing: {stale}"


@pytest.mark.parametrize("field", sorted(Settings.model_fields), ids=lambda f: Settings.model_fields[f].alias or f)
def test_each_documented_default_matches_the_code(field: str) -> None:
    info = Settings.model_fields[field]
    assert info.alias
    default_cell, meaning = _config_table()[info.alias]
    assert default_cell.strip("`") == _documented_default(info.default), f"{info.alias}: default in the docs"
    assert len(meaning) > 10, f"{info.alias}: say what it means"


def test_every_exported_metric_is_named_in_the_metrics_section() -> None:
    section = _section("Status, health and metrics")
    for family in Metrics().registry.collect():
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert exposed in section, f"metric {exposed} is not documented"


def test_operations_guide_has_the_sections_operators_need() -> None:
    for title in (
        "Configuration",
        "Status, health and metrics",
        "Dead letters",
        "Resync and verify",
        "Slot safety",
        "Scaling beyond one machine",
        "Security",
        "Troubleshooting",
    ):
        assert _section(title).strip(), title


def _cli_tree() -> dict[str, set[str]]:
    """Command path ("dlq list") → its option names, from the Typer app."""
    import typer.main

    from replicator.cli import app

    tree: dict[str, set[str]] = {}

    def walk(command: Any, path: str) -> None:  # a click Command (Typer may vendor its own click)
        tree[path] = {opt for param in command.params for opt in getattr(param, "opts", []) if opt.startswith("-")}
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return tree


def _documented_invocations() -> list[str]:
    """Every ``replicator …`` invocation in the guide: inline code spans and lines of shell blocks."""
    text = DOCS.read_text()
    found = re.findall(r"`(replicator [^`]+)`", text)
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            found.extend(re.findall(r"(?:^|&& |exec \S+ )(replicator [a-z].*)", command))
    return found


def test_every_replicator_command_and_option_in_the_guide_exists() -> None:
    tree = _cli_tree()
    invocations = _documented_invocations()
    assert len(invocations) > 10
    for invocation in invocations:
        words = invocation.split()[1:]
        path = ""
        while words and re.fullmatch(r"[a-z][a-z-]*", words[0]) and f"{path} {words[0]}".strip() in tree:
            path = f"{path} {words.pop(0)}".strip()
        assert path, f"`{invocation}`: no such replicator command"
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(words)):
            assert option in tree[path], f"`{invocation}`: `replicator {path}` has no option {option}"
