"""``event-meter dashboard``: a local web page over the stored reports.

``make_server(meter, host, port)`` binds a standard-library HTTP server that
serves the page (``static/``: HTML, CSS and JS, nothing fetched from the
network) and a JSON API answering with ``EventMeter.summary``, ``series`` and
``compare`` (``api``). The server is meant for one machine: it binds
127.0.0.1 by default, answers GET only, and sends a strict
Content-Security-Policy.
"""

from __future__ import annotations

from event_meter.dashboard.server import DashboardServer, make_server

__all__ = ["DashboardServer", "make_server"]
