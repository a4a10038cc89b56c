"""PostgreSQL fixtures shared by the store-specific PostgreSQL test modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pg_server import PostgresServer, drop_test_tables, new_table_prefix


@pytest.fixture
def server(postgres_server: PostgresServer) -> PostgresServer:
    return postgres_server


@pytest.fixture
def prefix(server: PostgresServer) -> Iterator[str]:
    yield new_table_prefix()
    drop_test_tables()


@pytest.fixture
def admin(server: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    with server.connect() as conn:
        yield conn
