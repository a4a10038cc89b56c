"""``event_meter.contrib.sqlalchemy.metadata`` and ``PostgresRollups(engine=...)`` end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from contrib.schemas import schema_of
from event_meter import EventMeter, Report
from event_meter.errors import ConfigurationError
from event_meter.stores.memory import MemoryStream
from event_meter.stores.postgres import PostgresRollups, install
from pg_server import PostgresServer, drop_test_tables, new_table_prefix
from support import FakeClock, random_namespace, record

sa = pytest.importorskip("sqlalchemy")
from event_meter.contrib.sqlalchemy import metadata  # noqa: E402  (needs sqlalchemy)

NAME = "invoice_delivery"


@pytest.fixture
def engine(postgres_server: PostgresServer) -> Iterator[Any]:
    url = postgres_server.dsn.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url, pool_size=2)
    yield engine
    engine.dispose()
    drop_test_tables()


@pytest.fixture
def admin(postgres_server: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    with postgres_server.connect() as conn:
        yield conn


def test_metadata_names_the_three_tables_of_a_prefix() -> None:
    assert sorted(metadata().tables) == [
        "event_meter_processed_entries",
        "event_meter_rollups",
        "event_meter_strings",
    ]
    assert sorted(metadata("billing").tables) == [
        "billing_processed_entries",
        "billing_rollups",
        "billing_strings",
    ]
    assert metadata() is not metadata()  # a new MetaData each call, safe to combine


@pytest.mark.parametrize("prefix", ["", "1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 60])
def test_metadata_refuses_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix"):
        metadata(prefix)


@pytest.mark.postgres
def test_create_all_gives_the_schema_of_install(
    engine: Any, admin: psycopg.Connection[Any], postgres_server: PostgresServer
) -> None:
    by_metadata, by_install = new_table_prefix(), new_table_prefix()
    metadata(by_metadata).create_all(engine)
    install(postgres_server.dsn, table_prefix=by_install)

    schema = schema_of(admin, by_metadata)
    assert schema == schema_of(admin, by_install)
    assert len(schema["columns"]) == 14
    assert len(schema["indexes"]) == 7  # 3 primary keys + the 4 of sql/schema.sql
    assert ("{p}_rollups", ["fillfactor=70"]) in schema["options"]

    install(engine, table_prefix=by_metadata)  # idempotent over tables made by create_all
    assert schema_of(admin, by_metadata) == schema


def test_include_object_of_the_docstring_excludes_tables_and_their_indexes() -> None:
    tables = frozenset(metadata().tables)

    def include_object(obj: Any, name: str, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = obj.table.name if type_ == "index" else name
        return table not in tables

    ours = metadata().tables["event_meter_rollups"]
    other = sa.Table("invoices", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    assert not include_object(ours, ours.name, "table", False, None)
    for index in ours.indexes:
        assert not include_object(index, str(index.name), "index", False, None)
    assert include_object(other, "invoices", "table", False, None)


@pytest.mark.postgres
def test_postgres_rollups_on_the_engine_over_create_all_tables(
    engine: Any, admin: psycopg.Connection[Any], clock: FakeClock
) -> None:
    prefix = new_table_prefix()
    metadata(prefix).create_all(engine)
    store = PostgresRollups(engine=engine, table_prefix=prefix, install_schema=False)
    meter = EventMeter(
        namespace=random_namespace(),
        stream_storage=MemoryStream(),
        rollup_storage=store,
        clock=clock,
    )
    report = Report(NAME).index_by("provider").measure_interval_by("customer_id")
    for customer in (1, 2, 1):
        record(meter, NAME, provider="postmark", customer_id=customer)
    record(meter, NAME, "failure", provider="ses", customer_id=3)

    assert meter.process_pending(report).processed == 4
    assert meter.process_pending(report).processed == 0
    assert meter.summary(NAME, version=1)["count"] == 4
    postmark = meter.summary(NAME, version=1, by={"provider": "postmark"})
    assert (postmark["count"], postmark["success_count"]) == (3, 3)

    count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{prefix}_rollups"))
    rows = admin.execute(count).fetchone()
    assert rows is not None
    assert rows[0] > 0  # in the tables create_all made
    deleted = meter.cleanup_history(clock.advance(days=2))
    assert deleted["rollup_keys_deleted"] > 0
    assert meter.summary(NAME, version=1)["count"] == 0
    store.close()
