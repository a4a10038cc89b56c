"""The dashboard's HTTP API against a live server on port 0 (urllib, no browser)."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from dashboard.conftest import HOSTILE_NAME, INVOICES, T0, Dashboard, fetch
from event_meter.dashboard import server
from event_meter.errors import StorageError

WINDOW = {"start": "2025-01-06T10:50:00Z", "end": "2025-01-06T11:10:00Z"}


def api(dashboard: Dashboard, endpoint: str, *pairs: tuple[str, str]) -> tuple[int, Any]:
    response = fetch(f"{dashboard.url}api/{endpoint}?{urlencode(pairs)}")
    assert response.headers["Content-Type"] == "application/json"
    return response.status, response.json()


def test_reports_lists_every_processed_report_of_the_namespace(dashboard: Dashboard) -> None:
    status, body = api(dashboard, "reports")
    assert status == 200
    assert body == {
        "namespace": dashboard.recorded.namespace,
        "reports": [
            {"name": HOSTILE_NAME, "version": 1},
            {"name": "invoice_delivery", "version": 1},
        ],
    }


def test_definition_is_the_stored_definition(dashboard: Dashboard) -> None:
    status, body = api(dashboard, "definition", ("name", "invoice_delivery"), ("version", "1"))
    assert status == 200
    assert body == dashboard.meter.report_definition(INVOICES)


def test_summary_equals_the_library_summary(dashboard: Dashboard) -> None:
    recorded = dashboard.recorded
    status, body = api(dashboard, "summary", ("name", "invoice_delivery"))
    assert status == 200
    assert body == dashboard.meter.summary("invoice_delivery", version=1)
    assert body["count"] == recorded.count() == 30

    pairs = [("name", "invoice_delivery"), *WINDOW.items(), ("by", "provider=postmark")]
    status, body = api(dashboard, "summary", *pairs)
    assert status == 200
    expected = dashboard.meter.summary(
        "invoice_delivery", version=1, **WINDOW, by={"provider": "postmark"}
    )
    assert body == expected
    assert expected["count"] == recorded.count(provider="postmark")


@pytest.mark.parametrize("every", ["minute", "hour"])
def test_series_equals_the_library_series(dashboard: Dashboard, every: str) -> None:
    pairs = [("name", "invoice_delivery"), ("every", every), *WINDOW.items()]
    status, body = api(dashboard, "series", *pairs, ("by", "provider=ses"))
    assert status == 200
    assert body == dashboard.meter.series(
        "invoice_delivery", version=1, every=every, **WINDOW, by={"provider": "ses"}
    )
    assert len(body) == (20 if every == "minute" else 2)


def test_series_defaults_to_the_hour_before_the_meters_clock(dashboard: Dashboard) -> None:
    status, body = api(dashboard, "series", ("name", "invoice_delivery"))
    assert status == 200
    assert body == dashboard.meter.series("invoice_delivery", version=1)


def test_compare_equals_the_library_compare(dashboard: Dashboard) -> None:
    before = ("2025-01-06T10:50:00Z", "2025-01-06T11:00:00Z")
    after = ("2025-01-06T11:00:00Z", "2025-01-06T11:10:00Z")
    pairs = [("before", before[0]), ("before", before[1]), ("after", after[0]), ("after", after[1])]
    status, body = api(dashboard, "compare", ("name", "invoice_delivery"), *pairs)
    assert status == 200
    assert body == dashboard.meter.compare(
        "invoice_delivery", version=1, before=before, after=after
    )
    hour = T0.replace(minute=0) + timedelta(hours=1)
    change = body["change"]["count"]
    assert change["before"] == dashboard.recorded.count(end=hour)
    assert change["after"] == dashboard.recorded.count(start=hour)


@pytest.mark.parametrize(
    ("endpoint", "pairs", "message"),
    [
        ("summary", [], "/api/summary needs name=EVENT_NAME"),
        ("summary", [("name", "invoice_delivery"), ("version", "0")], "version must be a positive"),
        (
            "summary",
            [("name", "invoice_delivery"), ("colour", "red")],
            "unknown parameter 'colour'",
        ),
        ("summary", [("name", "invoice_delivery"), ("start", "2025")], "pass both start and end"),
        ("summary", [("name", "invoice_delivery"), ("start", "x"), ("end", "y")], "ISO-8601"),
        ("summary", [("name", "invoice_delivery"), ("by", "queue=mailers")], "has no index on"),
        ("summary", [("name", "invoice_delivery"), ("by", "provider")], "by must be param=value"),
        ("series", [("name", "invoice_delivery"), ("every", "day")], "every='day'"),
        ("series", [("name", "invoice_delivery"), ("every", "a"), ("every", "b")], "given 2 times"),
        ("compare", [("name", "invoice_delivery"), ("before", "2025-01-06")], "before must be a"),
    ],
)
def test_bad_input_is_400_with_the_message(
    dashboard: Dashboard, endpoint: str, pairs: list[tuple[str, str]], message: str
) -> None:
    status, body = api(dashboard, endpoint, *pairs)
    assert status == 400
    assert message in body["error"]


def test_a_report_never_processed_is_404_with_the_library_message(dashboard: Dashboard) -> None:
    status, body = api(dashboard, "summary", ("name", "refund"), ("version", "3"))
    assert status == 404
    assert body == {
        "error": f"refund v3 has never been processed in namespace "
        f"{dashboard.recorded.namespace!r}; run process_pending first",
        "status": 404,
    }


@pytest.mark.parametrize("path", ["nope", "api/nope", "static/../server.py", "static/"])
def test_unknown_paths_are_404_json(dashboard: Dashboard, path: str) -> None:
    response = fetch(dashboard.url + path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == 404


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("", "text/html; charset=utf-8", b"<!doctype html>"),
        ("static/app.js", "text/javascript; charset=utf-8", b'from "./chart.js"'),
        ("static/chart.js", "text/javascript; charset=utf-8", b"export function renderChart"),
        ("static/format.js", "text/javascript; charset=utf-8", b"export function el"),
        ("static/style.css", "text/css; charset=utf-8", b":root"),
        ("static/favicon.svg", "image/svg+xml", b"<svg"),
    ],
)
def test_every_response_carries_the_security_headers(
    dashboard: Dashboard, path: str, content_type: str, marker: bytes
) -> None:
    response = fetch(dashboard.url + path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert marker in response.body
    for name, value in server.SECURITY_HEADERS:
        assert response.headers[name] == value
    error = fetch(dashboard.url + "api/summary")
    assert error.headers["Content-Security-Policy"] == "default-src 'self'"
    assert error.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_loads_nothing_from_elsewhere(dashboard: Dashboard) -> None:
    page = fetch(dashboard.url).body.decode()
    assert "http://" not in page
    assert "https://" not in page
    assert "<script>" not in page  # CSP forbids inline script: only /static/app.js
    assert "style=" not in page


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_is_allowed(dashboard: Dashboard, method: str) -> None:
    response = fetch(dashboard.url + "api/reports", method=method)
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    assert response.json()["error"] == "only GET is supported"


def test_head_is_405_without_a_body(dashboard: Dashboard) -> None:
    response = fetch(dashboard.url, method="HEAD")
    assert (response.status, response.body) == (405, b"")


def test_a_foreign_host_header_is_refused(dashboard: Dashboard) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 with its own name in Host."""
    response = fetch(dashboard.url + "api/reports", headers={"Host": "evil.example:80"})
    assert response.status == 403
    port = dashboard.server.port
    assert fetch(dashboard.url, headers={"Host": f"localhost:{port}"}).status == 200


def test_a_server_bound_to_every_address_accepts_any_host() -> None:
    assert server._allowed_hosts("0.0.0.0", 8765) is None
    allowed = server._allowed_hosts("127.0.0.1", 8765)
    assert allowed is not None
    assert {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"} <= allowed


def test_storage_errors_are_500_json_without_a_traceback(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise StorageError("rollup storage is unreachable")

    monkeypatch.setattr(dashboard.meter.rollups, "list_reports", broken)
    response = fetch(dashboard.url + "api/reports")
    assert response.status == 500
    assert response.json() == {"error": "rollup storage is unreachable", "status": 500}


def test_bugs_are_500_with_a_generic_message(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(dashboard.meter.rollups, "list_reports", broken)
    response = fetch(dashboard.url + "api/reports")
    assert response.status == 500
    assert b"secret" not in response.body
    assert "RuntimeError: secret internals" in capsys.readouterr().err


def test_errors_of_http_server_itself_are_json_too(dashboard: Dashboard) -> None:
    with socket.create_connection(("127.0.0.1", dashboard.server.port), timeout=30) as sock:
        sock.sendall(b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 501 "), head
    assert b"Content-Security-Policy: default-src 'self'" in head
    assert orjson.loads(body) == {"error": "Unsupported method ('BREW')", "status": 501}
