"""A minimal HTTP/1.1 server for ``/metrics``, ``/healthz`` and ``/readyz``.

Served by the event loop itself, so a blocked loop fails the liveness probe (no answer), and
a loop that lags past the limit answers 503 (see :mod:`consumer.service.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.logs import get_logger

log = get_logger(__name__)


class HealthSource(Protocol):
    def ready(self) -> bool: ...
    def alive(self) -> bool: ...
    def report(self) -> dict[str, object]: ...
    def liveness_report(self) -> dict[str, object]: ...


class HttpServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: HealthSource
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None
        self.port = port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("http_server_started", host=self._host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(self, path: str) -> tuple[int, str, bytes]:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(self._registry)),
            "/healthz": lambda: _json(
                200 if self._health.alive() else 503, self._health.liveness_report()
            ),
            "/readyz": lambda: _json(200 if self._health.ready() else 503, self._health.report()),
        }
        handler = routes.get(path.split("?", 1)[0])
        return handler() if handler else _json(404, {"error": "not found"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in {"GET", "HEAD"}:
                status, ctype, body = _json(405, {"error": "method not allowed"})
            else:
                status, ctype, body = self._route(parts[1])
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if parts and parts[0] == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", orjson.dumps(body)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
