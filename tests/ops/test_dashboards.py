"""The Grafana dashboard and the Prometheus alert rules under docs/ read only metrics that the
real `chip-orchestrator metrics` exporter serves: it is started on a test database whose state
makes every series appear, scraped over HTTP, and each PromQL expression's names are checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.adapters import cycle_timing
from orchestrator.app.settings import ROOT
from orchestrator.dev.receiver_process import running_receiver
from orchestrator.services import backoff, tally
from orchestrator.store import outbox
from tests.factories import make_chip
from tests.ops.conftest import ops_env
from tests.ops.test_metrics import INTERVAL, MetricsProcess
from tests.support.promql import metric_names
from tests.support.webhooks import TOKEN, envelope
from tests.worker.conftest import worker_env

DASHBOARD = ROOT / "docs" / "grafana" / "chip-orchestrator.json"
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL_TESTS = Path(__file__).with_name("alerts_promtool_test.yml")
#: Series Prometheus itself writes for every scraped target (not served by any exporter).
PROMETHEUS_SYNTHETIC = {"up"}
#: Prometheus' duration format (`for:`).
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' nested panels included."""
    doc = json.loads(DASHBOARD.read_text())
    panels = [p for top in doc["panels"] for p in [top, *top.get("panels", [])]]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule."""
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def a_pool_showing_every_series(engine: sa.Engine, redis_url: str) -> None:
    """State that makes each optional series appear: a valid config, a cycle, a Slack error,
    a delivery, a purchase back-off, chips and operations."""
    make_chip(engine, "active")
    make_chip(engine, "ready")
    with engine.begin() as conn:
        delivered, refused = (
            outbox.enqueue(conn, "operacoes", "ok"),
            outbox.enqueue(conn, "alertas", "x"),
        )
        conn.execute(
            sa.text("UPDATE notification_outbox SET delivered_at = now() WHERE id = :id"),
            {"id": delivered},
        )
        conn.execute(
            sa.text(
                "UPDATE notification_outbox SET last_attempt_at = now(), "
                "last_error_code = 'token_revoked' WHERE id = :id"
            ),
            {"id": refused},
        )
        backoff.record_failure(conn, "out_of_stock", "sem estoque")
    tally.check_due(engine)  # the counts' checks (chip_orchestrator_status_tally_*)
    client = redis.Redis.from_url(redis_url)
    cycle_timing.record(client, 0.5)
    client.close()


@pytest.fixture(scope="module")
def exported(
    engine: sa.Engine, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[set[str]]:
    """Every sample name one scrape of the real exporter serves (names as PromQL sees them)."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE notification_outbox, purchase_backoff"))
    a_pool_showing_every_series(engine, redis_url)
    proc = MetricsProcess(ops_env(database_url, redis_url), tmp_path_factory.mktemp("d"), INTERVAL)
    try:
        text = requests.get(proc.url, timeout=5).text
    finally:
        proc.stop()
    text += receiver_scrape(database_url, redis_url, tmp_path_factory.mktemp("r") / "receiver.log")
    yield {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def receiver_scrape(database_url: str, redis_url: str, log: Path) -> str:
    """The webhook receiver's own /metrics (chip_orchestrator_webhook_*), after one delivery."""
    env = worker_env(database_url, redis_url, WEBHOOK_TOKEN=TOKEN)
    with running_receiver(env, log) as receiver:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        event = envelope("connection.update", "no-such-instance", {"state": "open"})
        answer = requests.post(f"{receiver.url}/webhooks/evolution", json=event, headers=auth)
        assert answer.json()["status"] == "ignored", answer.text
        return requests.get(f"{receiver.url}/metrics", headers=auth, timeout=5).text


@pytest.mark.db
@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_metric_the_docs_query_is_served_by_the_exporter(
    exported: set[str], source: str
) -> None:
    # Given every expression of the dashboard (or the rules)
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    assert len(exprs) >= 15
    # When their metric names are compared with a scrape of the real exporter
    missing = {
        (where, name)
        for where, expr in exprs
        for name in metric_names(expr)
        if name not in exported and name not in PROMETHEUS_SYNTHETIC
    }
    # Then none is missing (a counter is read as ..._total, as served)
    assert missing == set()


@pytest.mark.db
def test_the_scrape_names_counters_with_their_total_suffix(exported: set[str]) -> None:
    # The family name of a counter is not a series: an expression using it would find nothing
    assert "chip_orchestrator_operations_total" in exported
    assert "chip_orchestrator_operations" not in exported
    assert "chip_orchestrator_scrape_errors_total" in exported
    assert {"chip_orchestrator_outbox_last_error", "chip_orchestrator_pool_target"} <= exported
    assert {
        "chip_orchestrator_webhook_events_total",
        "chip_orchestrator_webhook_seconds_bucket",
    } <= exported


def test_the_names_of_an_expression_ignore_functions_labels_and_durations() -> None:
    expr = (
        'sum by (operacao) (increase(chip_orchestrator_operations_total{sucesso="false"}[1h]))'
        " > on() group_left(x) max_over_time(other_metric_bucket[$__rate_interval] offset 5m)"
        ' and absent(foo_created) or {__name__="named_total", a="b"} unless up{job="x y"} > bool 2'
    )
    assert metric_names(expr) == {
        "chip_orchestrator_operations_total",
        "other_metric_bucket",
        "foo_created",
        "named_total",
        "up",
    }
    assert metric_names('count(chip_orchestrator_operations{operacao="cancel"})') == {
        "chip_orchestrator_operations"
    }


def test_the_rule_file_has_prometheus_structure() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = []
    for group in doc["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str) and metric_names(rule["expr"])
            assert "for" not in rule or DURATION.match(rule["for"]), rule
            assert rule["labels"]["severity"] in ("critical", "warning"), rule
            assert rule["annotations"]["summary"].strip(), rule
            names.append(rule["alert"])
    assert len(names) == len(set(names))


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_runbook_link_of_the_rules_points_at_a_heading() -> None:
    anchors = _anchors(RUNBOOK)
    doc = yaml.safe_load(RULES.read_text())
    links = [
        r["annotations"]["runbook"]
        for g in doc["groups"]
        for r in g["rules"]
        if "runbook" in r["annotations"]
    ]
    assert links
    for link in links:
        path, anchor = link.split("#")
        assert path == "docs/runbook.md"
        assert anchor in anchors, link


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc["schemaVersion"], int) and doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


#: Skip marker of the checks that need promtool (Prometheus' own parser and rule tester).
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")
#: What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    # tests/ops/alerts_promtool_test.yml: pool critical after 5 min, production below min after
    # 30, Slack refusing the token (not a 503), no cycle for 5 min
    for args in (("check", "rules", str(RULES)), ("test", "rules", str(PROMTOOL_TESTS))):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # Given each dashboard query as a recording rule, Grafana's variables filled in
    rules = []
    for n, (_, expr) in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    # When promtool checks them, Then every one parses
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
