"""The Django app (SPEC section 14) against the session's real PostgreSQL server.

Django settings can be configured once per process, so every scenario runs
Django in a subprocess: ``python -m django COMMAND`` for management commands
and ``python -c`` for code that records or processes through the default
meter. Settings come from ``django_settings.py``, steered by environment
variables. Each test module gets its own database (migrated once), each test
its own namespace and stream folder.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from contrib.schemas import schema_of
from event_meter.stores.postgres import install, schema_sql
from pg_server import PostgresServer
from support import random_namespace

pytestmark = pytest.mark.postgres
pytest.importorskip("django")

TESTS_DIR = Path(__file__).resolve().parents[1]
RECORDED_AT = "2026-05-06T10:00:30+00:00"
PROCESSED_AT = "2026-05-06T10:05:00+00:00"  # the recording minute is claimable by then
WINDOW = ["--start", "2026-05-06T10:00:00Z", "--end", "2026-05-06T11:00:00Z"]
REPORT = "contrib.django_settings:INVOICES"
DEFAULT: Any = object()  # the EVENT_METER of django_settings.py

RECORD = """
import event_meter
runs = [("postmark", "success")] * 3 + [("postmark", "failure"), ("ses", "success")]
for provider, status in runs:
    event = event_meter.start("invoice_delivery", provider=provider)
    result = event.success() if status == "success" else event.failure("bounced")
    assert result.error is None, result.error
print("recorded")
"""

REFUSED_IN_ATOMIC = """
from django.db import transaction
import event_meter
from event_meter.errors import ConfigurationError
from contrib.django_settings import INVOICES

event_meter.start("invoice_delivery", provider="postmark").success()
with transaction.atomic():
    try:
        event_meter.process_pending(INVOICES)
    except ConfigurationError as exc:
        print("refused:", exc)
    else:
        raise AssertionError("processing ran inside transaction.atomic()")
"""

DESCRIBE_DEFAULT = """
import json
import event_meter
meter = event_meter.default_meter()
print(json.dumps({
    "namespace": meter.config.namespace,
    "stream": type(meter.stream).__name__,
    "rollups": repr(meter.rollups),
}))
"""


def create_database(server: PostgresServer) -> str:
    name = f"event_meter_django_{secrets.token_hex(4)}"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server: PostgresServer, name: str) -> None:
    with server.connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def dsn(server: PostgresServer, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/{database}"


@dataclass
class Project:
    """A Django project on one database, namespace and stream folder, run in subprocesses."""

    server: PostgresServer
    database: str
    namespace: str
    stream: Path

    def env(self, settings: Any = DEFAULT, now: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "contrib.django_settings",
            "EVENT_METER_TEST_PG_PORT": str(self.server.port),
            "EVENT_METER_TEST_PG_DB": self.database,
            "EVENT_METER_TEST_NAMESPACE": self.namespace,
            "EVENT_METER_TEST_STREAM": str(self.stream),
        }
        env.pop("EVENT_METER_TEST_SETTINGS", None)
        env.pop("EVENT_METER_TEST_NOW", None)
        if settings is not DEFAULT:  # JSON; None is `EVENT_METER = None` (not set)
            env["EVENT_METER_TEST_SETTINGS"] = json.dumps(settings)
        if now is not None:
            env["EVENT_METER_TEST_NOW"] = now
        return env

    def _run(self, argv: list[str], **env: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(**env),
            check=False,
        )

    def manage(self, *argv: str, **env: Any) -> subprocess.CompletedProcess[str]:
        """``manage.py`` ``argv`` (as ``python -m django``)."""
        return self._run(["-m", "django", *argv], **env)

    def ok(self, *argv: str, **env: Any) -> str:
        done = self.manage(*argv, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *argv: str, **env: Any) -> Any:
        return json.loads(self.ok(*argv, "--json", **env))

    def script(self, code: str, **env: Any) -> subprocess.CompletedProcess[str]:
        """``code`` after ``django.setup()``, in a fresh interpreter."""
        setup = "import django\ndjango.setup()\n"
        return self._run(["-c", setup + textwrap.dedent(code)], **env)


@pytest.fixture(scope="module")
def migrated_database(postgres_server: PostgresServer) -> Iterator[str]:
    """One database per module, migrated once through ``manage.py migrate``."""
    name = create_database(postgres_server)
    project = Project(postgres_server, name, random_namespace(), Path("/nonexistent"))
    try:
        project.ok("migrate", "--no-input")
        yield name
    finally:
        drop_database(postgres_server, name)


@pytest.fixture
def project(postgres_server: PostgresServer, migrated_database: str, tmp_path: Path) -> Project:
    return Project(postgres_server, migrated_database, random_namespace(), tmp_path / "stream")


# -- migrations ------------------------------------------------------------------------------


def test_migrate_creates_the_tables_of_install_and_zero_drops_them(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    migrated, installed = create_database(postgres_server), create_database(postgres_server)
    try:
        project = Project(postgres_server, migrated, random_namespace(), tmp_path)
        project.ok("migrate", "event_meter", "--no-input")
        install(dsn(postgres_server, installed))
        with (
            psycopg.connect(dsn(postgres_server, migrated)) as by_migration,
            psycopg.connect(dsn(postgres_server, installed)) as by_install,
        ):
            schema = schema_of(by_migration, "event_meter")
            assert schema == schema_of(by_install, "event_meter")
            assert schema["options"] == [
                ("{p}_processed_entries", None),
                ("{p}_rollups", ["fillfactor=70"]),
                ("{p}_strings", None),
            ]
            assert len(schema["indexes"]) == 7  # 3 primary keys + the 4 of sql/schema.sql

        project.ok("migrate", "event_meter", "zero", "--no-input")
        with psycopg.connect(dsn(postgres_server, migrated)) as conn:
            assert schema_of(conn, "event_meter")["columns"] == []
    finally:
        drop_database(postgres_server, migrated)
        drop_database(postgres_server, installed)


def test_migration_is_a_no_op_on_other_databases(project: Project) -> None:
    assert "Applying event_meter.0001_initial... OK" in project.ok(
        "migrate", "event_meter", "--database", "lite", "--no-input"
    )


def test_migration_runs_the_ddl_of_schema_sql(project: Project) -> None:
    shown = project.ok("sqlmigrate", "event_meter", "0001")
    for name in ("event_meter_rollups", "event_meter_strings", "event_meter_processed_entries"):
        assert f'CREATE TABLE IF NOT EXISTS "{name}"' in shown
    assert "fillfactor = 70" in shown


# -- ready() ---------------------------------------------------------------------------------


def test_ready_configures_the_default_meter_from_event_meter(project: Project) -> None:
    done = project.script(DESCRIBE_DEFAULT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "namespace": project.namespace,
        "stream": "FileStream",
        "rollups": "PostgresRollups(DjangoSource, table_prefix='event_meter')",
    }
    assert done.stderr == ""  # no warning, and no database access during ready()


@pytest.mark.parametrize(
    ("settings", "warning"),
    [(None, ""), ({"namespace": ""}, "EVENT_METER was not applied")],
    ids=["unset", "invalid"],
)
def test_ready_without_valid_event_meter_keeps_the_default_and_does_not_raise(
    project: Project, settings: Any, warning: str
) -> None:
    done = project.script(DESCRIBE_DEFAULT, settings=settings)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["namespace"] == "event_meter:v1"
    assert warning in done.stderr
    if not warning:
        assert done.stderr == ""


# -- management commands ---------------------------------------------------------------------


def test_record_process_summary_cleanup_round_trip_on_the_django_connection(
    project: Project,
) -> None:
    recorded = project.script(RECORD, now=RECORDED_AT)
    assert recorded.returncode == 0, recorded.stderr

    processed = project.json("event_meter_process", REPORT, "--batch-size", "2", now=PROCESSED_AT)
    assert processed["processed"] == 5
    again = project.json("event_meter_process", REPORT, now=PROCESSED_AT)
    assert again["processed"] == 0

    summary = project.json("event_meter_summary", "invoice_delivery", "--version", "1", *WINDOW)
    assert (summary["count"], summary["success_count"], summary["failure_count"]) == (5, 4, 1)
    postmark = project.json(
        "event_meter_summary", "invoice_delivery", *WINDOW, "--by", "provider=postmark"
    )
    assert (postmark["count"], postmark["failure_count"]) == (4, 1)
    table = project.ok("event_meter_summary", "invoice_delivery", *WINDOW)
    assert "success_count" in table

    with psycopg.connect(dsn(project.server, project.database)) as conn:
        keys = conn.execute(
            "SELECT count(*) FROM event_meter_rollups WHERE key LIKE %s",
            [project.namespace.replace("_", r"\_") + "%"],
        ).fetchone()
        assert keys is not None
        assert keys[0] > 0  # in the migrated tables of the Django database

    kept = project.json(
        "event_meter_cleanup", "--before", "2026-05-06T10:00:00Z", "--event", "invoice_delivery"
    )
    assert kept["rollup_keys_deleted"] == 0
    cleaned = project.json("event_meter_cleanup", "--before", "2026-05-08T00:00:00Z")
    assert cleaned["rollup_keys_deleted"] > 0
    summary = project.json("event_meter_summary", "invoice_delivery", *WINDOW)
    assert summary["count"] == 0


def test_command_errors_are_one_line_and_exit_1(project: Project) -> None:
    bad_report = project.manage("event_meter_process", "no_such_module:REPORT")
    assert bad_report.returncode == 1
    assert bad_report.stderr.strip().splitlines() == [bad_report.stderr.strip().splitlines()[0]]
    assert "no_such_module" in bad_report.stderr
    bad_window = project.manage("event_meter_summary", "invoice_delivery", "--start", "2026")
    assert bad_window.returncode == 1
    assert len(bad_window.stderr.strip().splitlines()) == 1, bad_window.stderr


def test_processing_inside_atomic_raises_configuration_error(project: Project) -> None:
    done = project.script(REFUSED_IN_ATOMIC, now=RECORDED_AT)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout
    assert "atomic" in done.stdout


def test_event_meter_sql_prints_the_schema(project: Project) -> None:
    assert project.ok("event_meter_sql") == schema_sql("event_meter").rstrip("\n") + "\n"
    assert project.ok("event_meter_sql", "--table-prefix", "billing").startswith(
        schema_sql("billing").split("\n", 1)[0]
    )
    assert "billing_rollups" in project.ok("event_meter_sql", "--table-prefix", "billing")
    bad = project.manage("event_meter_sql", "--table-prefix", "no-dash")
    assert bad.returncode == 1
    assert "no-dash" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# -- system checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "check_id", "named"),
    [
        ([1], "event_meter.E001", "must be a dict"),
        ({"bogus": 1}, "event_meter.E002", "'bogus'"),
        ({"namespace": ""}, "event_meter.E003", "'namespace'"),
        ({"lock_ttl": -1}, "event_meter.E003", "'lock_ttl'"),
        ({"database": "missing"}, "event_meter.E004", "'missing'"),
        ({"database": "lite"}, "event_meter.E005", "'lite'"),
        ({"database": "default", "rollup_storage": "memory://"}, "event_meter.E006", "both"),
        ({"stream_storage": "bogus://x"}, "event_meter.E007", "stream_storage"),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("event") else None,
)
def test_bad_settings_are_system_check_errors_and_ready_does_not_raise(
    project: Project, settings: Any, check_id: str, named: str
) -> None:
    done = project.manage("check", settings=settings)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if check_id in line]
    assert len(lines) == 1, done.stderr
    assert named in lines[0]
    assert lines[0].startswith(f"settings.EVENT_METER: ({check_id})")


def test_several_bad_settings_are_reported_together(project: Project) -> None:
    done = project.manage("check", settings={"namespace": "", "bogus": 1, "database": "missing"})
    assert done.returncode == 1
    for check_id, named in [("E003", "namespace"), ("E002", "bogus"), ("E004", "missing")]:
        assert any(
            f"event_meter.{check_id}" in line and named in line for line in done.stderr.splitlines()
        ), done.stderr


def test_valid_settings_pass_the_checks(project: Project) -> None:
    assert "no issues" in project.ok("check")
