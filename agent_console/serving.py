"""Serving the console: a threaded WSGI server in a background thread.

Werkzeug's threaded server gives every connection its own thread and writes each chunk of a
streamed response straight to the socket, which is what Server-Sent Events need: 50 connected
consoles are 50 mostly idle threads blocked on their queues. Waitress was tried and not chosen:
its fixed worker pool (4 threads by default) is held by long-lived SSE streams, so the pool has
to be sized above the number of consoles and other requests queue behind it. For a larger centre,
put the console behind a real reverse proxy and keep the same app.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from agent_console.context import EXTENSION_KEY


@dataclass
class RunningServer:
    server: BaseWSGIServer
    thread: threading.Thread
    url: str
    app: Flask

    def stop(self) -> None:
        """End every live stream, then stop accepting connections."""
        self.app.extensions[EXTENSION_KEY].hub.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request (tests and benchmarks make thousands)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def serve_in_thread(app: Flask, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> RunningServer:
    """Start serving ``app``; ``port=0`` picks a free port (the URL says which)."""
    handler = QuietRequestHandler if quiet else WSGIRequestHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="console-http", daemon=True)
    thread.start()
    return RunningServer(server, thread, f"http://{host}:{server.server_port}", app)
