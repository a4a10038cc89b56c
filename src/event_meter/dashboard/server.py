"""HTTP for the dashboard: the page, its static files and the JSON API.

Routes, GET only (other methods get 405)::

    /                   the page (static/index.html)
    /static/<file>      app.js, chart.js, format.js (ES modules), style.css, favicon.svg:
                        a fixed list, never a path on disk
    /api/<endpoint>     JSON from ``event_meter.dashboard.api``

Every response, errors included, carries ``Content-Security-Policy: default-src
'self'`` (no inline script or style, nothing fetched from elsewhere),
``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``. Errors are
JSON ``{"error": message}``, never a traceback page:

- 400: a bad query or a value the library rejects (``ValueError``,
  ``TypeError``, ``UnsupportedQueryError``), with the library's message;
- 404: an unknown path, or a report that was never processed;
- 403: a ``Host`` header naming another site while bound to a specific
  address, which stops DNS-rebinding pages from reading the API;
- 500: a storage error (its message) or a bug (a generic message; the
  traceback goes to the server's stderr).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import orjson

from event_meter._meter import EventMeter
from event_meter.dashboard import api
from event_meter.errors import DefinitionNotFoundError, EventMeterError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer", "make_server"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
MAX_QUERY_FIELDS: Final = 64

SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
JSON_TYPE: Final = "application/json"
STATIC_FILES: Final = {
    # route: (file in event_meter.dashboard.static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/chart.js": ("chart.js", "text/javascript; charset=utf-8"),
    "/static/format.js": ("format.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
WILDCARD_HOSTS: Final = frozenset(("", "0.0.0.0", "::"))
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("event_meter.dashboard.static")
    return {
        route: (folder.joinpath(filename).read_bytes(), content_type)
        for route, (filename, content_type) in STATIC_FILES.items()
    }


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """``Host`` header values to accept; None (any) when bound to every address."""
    if host in WILDCARD_HOSTS:
        return None
    names = {*LOOPBACK_NAMES, _url_host(host).lower()}
    allowed = {f"{name}:{port}" for name in names}
    if port == 80:
        allowed |= names
    return frozenset(allowed)


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server answering the dashboard for one ``EventMeter``.

    ``serve_forever()`` runs it; ``shutdown()`` (from another thread) stops it
    and ``server_close()`` releases the port. The meter is not closed here:
    whoever made it closes it.
    """

    def __init__(self, meter: EventMeter, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family  # read by TCPServer.__init__ to create the socket
        self.meter = meter
        self.static = _load_static()
        super().__init__((host, port), DashboardHandler)
        self.host = host
        self.allowed_hosts = _allowed_hosts(host, self.port)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.port

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The page's URL (a loopback one when bound to every address)."""
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else _url_host(self.host)
        return f"http://{host}:{self.port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "event-meter-dashboard"
    sys_version = ""  # no Python version in the Server header

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._send_error_json(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        url = urlsplit(self.path)
        if url.path.startswith("/api/"):
            self._api(url.path.removeprefix("/api/"), url.query)
            return
        found = self.server.static.get(url.path)
        if found is None:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no page at {url.path}")
            return
        body, content_type = found
        self._send(HTTPStatus.OK, body, content_type)

    def _not_allowed(self) -> None:
        self._send_error_json(
            HTTPStatus.METHOD_NOT_ALLOWED, "only GET is supported", [("Allow", "GET")]
        )

    # http.server's names for the handlers of each method (it answers 501 to the others).
    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed  # noqa: N815

    def _host_allowed(self) -> bool:
        allowed = self.server.allowed_hosts
        return allowed is None or (self.headers.get("Host") or "").lower() in allowed

    def _api(self, endpoint: str, query: str) -> None:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
            data = api.call(self.server.meter, endpoint, pairs)
        except (api.UnknownEndpointError, DefinitionNotFoundError) as exc:
            self._send_error_json(HTTPStatus.NOT_FOUND, str(exc))
        except (ValueError, TypeError) as exc:  # api.QueryError and the library's argument errors
            self._send_error_json(HTTPStatus.BAD_REQUEST, str(exc))
        except EventMeterError as exc:  # StorageError and friends: not the caller's fault
            self._send_error_json(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._send_error_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the dashboard's log has details"
            )
        else:
            self._send(HTTPStatus.OK, orjson.dumps(data), JSON_TYPE)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by ``http.server`` itself (bad request line, 501, ...) as JSON too."""
        status = HTTPStatus(code)
        self._send_error_json(status, message or status.phrase)

    def _send_error_json(
        self, status: HTTPStatus, message: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        body = orjson.dumps({"error": message, "status": status.value})
        self._send(status, body, JSON_TYPE, extra)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*SECURITY_HEADERS, *(extra or ())):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the URL; errors are logged by log_error

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"event-meter dashboard: {format % args}\n")


def make_server(
    meter: EventMeter, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> DashboardServer:
    """Bind the dashboard for ``meter`` on ``host:port`` (port 0 picks a free one).

    Raises ``OSError`` when the address cannot be bound. The caller runs
    ``serve_forever()`` and later ``shutdown()`` and ``server_close()``.
    """
    return DashboardServer(meter, host, port)
