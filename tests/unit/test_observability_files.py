"""The Grafana dashboard (docker/grafana/) and the Prometheus alert rules (docker/prometheus/) name only metrics the
code exports, with labels those metrics have, so renaming a metric in ``replicator/metrics.py`` fails here;
``promtool check rules`` validates the rules file where promtool is installed (Debian's ``prometheus`` package).

Exposed names follow the Prometheus text format as prometheus_client writes it
(https://prometheus.github.io/client_python/instrumenting/): a counter ``x`` is served as ``x_total`` (and
``x_created``), a histogram ``x`` as ``x_bucket``, ``x_sum``, ``x_count`` (and ``x_created``), a gauge as itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from replicator.metrics import WAL_STATUSES, MeteredProvider, Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "omics-cdc-replicator.json"
RULES = REPO / "docker" / "prometheus" / "omics-cdc-alerts.yaml"
# Labels Prometheus adds to every scraped series (target labels), usable in any selector.
TARGET_LABELS = {"instance", "job"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported_series() -> dict[str, set[str]]:
    """Every series name the replicator's registry serves → the label names it carries."""
    series: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        labels = set(_labelnames(family.name, Metrics()))
        for suffix in _SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def _labelnames(name: str, metrics: Metrics) -> tuple[str, ...]:
    for value in vars(metrics).values():
        if getattr(value, "_name", None) == name:
            return tuple(value._labelnames)
    raise AssertionError(f"no collector called {name}")


_SELECTOR = re.compile(r"\b(replicator_[a-z0-9_]+)\b(\{[^}]*\})?")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def unknown_references(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What ``expr`` names that the code does not export: unknown metrics, or labels a metric does not have."""
    problems: list[str] = []
    found = _SELECTOR.findall(expr)
    if not found:
        problems.append(f"names no replicator metric: {expr}")
    for name, selector in found:
        if name not in series:
            problems.append(f"unknown metric {name}")
            continue
        for label in _LABEL.findall(selector):
            if label not in series[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def _dashboard() -> dict[str, Any]:
    loaded = orjson.loads(DASHBOARD.read_bytes())
    assert isinstance(loaded, dict)
    return loaded


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _dashboard()["panels"] for target in panel.get("targets", [])]


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_checker_catches_a_renamed_metric_and_a_wrong_label() -> None:
    series = exported_series()
    assert unknown_references("rate(replicator_sink_calls_total[5m])", series) == []
    assert unknown_references("rate(replicator_sink_call_total[5m])", series) == [
        "unknown metric replicator_sink_call_total"
    ]
    assert unknown_references("replicator_sink_calls", series) == ["unknown metric replicator_sink_calls"]
    assert unknown_references('replicator_outbox_pending{table="x"}', series) == [
        "replicator_outbox_pending has no label table"
    ]
    assert unknown_references("up == 0", series) == ["names no replicator metric: up == 0"]


def test_every_dashboard_query_names_exported_metrics() -> None:
    series = exported_series()
    exprs = _dashboard_exprs()
    assert exprs
    problems = [f"{title}: {p}" for title, expr in exprs for p in unknown_references(expr, series)]
    assert not problems, problems


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    text = " ".join(expr for _, expr in _dashboard_exprs())
    for needed in (
        "replicator_lag_seconds",
        "replicator_slot_lag_bytes",
        "replicator_slot_wal_status",
        "replicator_outbox_pending",
        "replicator_outbox_oldest_pending_seconds",
        "replicator_dead_letter_rows",
        "replicator_sink_calls_total",
        "replicator_sink_requests_total",
        "replicator_sink_retries_total",
        "replicator_embedded_texts_total",
    ):
        assert needed in text, f"no panel shows {needed}"


def test_dashboard_panels_have_unique_ids_and_a_prometheus_datasource() -> None:
    dashboard = _dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]
    assert dashboard["title"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["type"] == "prometheus", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_alert_rule_names_exported_metrics_and_says_what_to_do() -> None:
    series = exported_series()
    rules = _rules()
    assert rules
    for rule in rules:
        assert not unknown_references(rule["expr"], series), (rule["alert"], unknown_references(rule["expr"], series))
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))


def test_the_alert_rules_cover_slot_loss_lag_and_dead_letters() -> None:
    exprs = " ".join(rule["expr"] for rule in _rules())
    for needed in ("replicator_slot_wal_status", "replicator_lag_seconds", "replicator_dead_letter_rows"):
        assert needed in exprs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wal_status_gauge_marks_exactly_the_current_state() -> None:
    metrics = Metrics()
    metrics.set_wal_status("unreserved")
    metrics.set_wal_status("reserved")
    values = {
        s: metrics.registry.get_sample_value("replicator_slot_wal_status", {"wal_status": s}) for s in WAL_STATUSES
    }
    assert values == {s: (1.0 if s == "reserved" else 0.0) for s in WAL_STATUSES}
    metrics.set_wal_status(None)
    assert metrics.registry.get_sample_value("replicator_slot_wal_status", {"wal_status": "missing"}) == 1.0
    assert metrics.registry.get_sample_value("replicator_slot_wal_status", {"wal_status": "reserved"}) == 0.0


class _FakeProvider:
    name = "fake"
    model = "m"
    dimension = 2

    def embed(self, texts: Any, *, query: bool = False) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def close(self) -> None:
        pass


def test_metered_provider_counts_texts_and_times_calls() -> None:
    metrics = Metrics()
    ticks = iter([10.0, 10.5, 20.0, 20.25])
    provider = MeteredProvider(_FakeProvider(), metrics, clock=lambda: next(ticks))
    assert provider.embed(["a", "b", "c"]) == [[1.0, 0.0]] * 3
    provider.embed(["d"], query=True)
    labels = {"provider": "fake"}
    assert metrics.registry.get_sample_value("replicator_embedded_texts_total", labels) == 4.0
    assert metrics.registry.get_sample_value("replicator_embed_seconds_count", labels) == 2.0
    assert metrics.registry.get_sample_value("replicator_embed_seconds_sum", labels) == pytest.approx(0.75)
    assert provider.dimension == 2
