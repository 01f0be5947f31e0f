"""A small standard-library HTTP server for an ASGI app: for hosts without uvicorn, and for the tests.

`ASGIServer(app, host, port).start()` serves `app` from a `ThreadingHTTPServer` (one thread per connection) and
runs the app's coroutines on one asyncio event loop in a background thread, so the app sees a normal ASGI server:
`lifespan` startup/shutdown, and one `http` scope per request with the whole body in one `http.request` message.
Responses are buffered (no streaming); request bodies need a `Content-Length` (or chunked encoding) and may not
exceed `max_body` bytes (413 otherwise). Use uvicorn or another ASGI server where that matters.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("gradshield.webhook.server")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

MAX_BODY = 4 * 1024 * 1024
REQUEST_TIMEOUT = 120.0


class ASGIServer:
    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.host, self.port = host, port
        self.max_body = max_body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._lifespan_task: Any = None
        self._shutdown: asyncio.Event | None = None

    # ---------------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ASGIServer":
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="asgi-loop", daemon=True)
        self._loop_thread.start()
        self._run(self._lifespan_startup())
        self._httpd = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        self._httpd.daemon_threads = True
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, name="asgi-http", daemon=True)
        self._http_thread.start()
        log.info("serving on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._loop is not None:
            try:
                self._run(self._lifespan_shutdown(), timeout=30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._loop_thread is not None:
                    self._loop_thread.join(timeout=5)
                self._loop.close()
                self._loop = None

    def serve_forever(self) -> None:
        """Start and block until interrupted (Ctrl-C / SIGTERM as KeyboardInterrupt)."""
        self.start()
        try:
            assert self._http_thread is not None
            while self._http_thread.is_alive():
                self._http_thread.join(timeout=1)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "ASGIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------------ plumbing
    def _run(self, coro: Awaitable[Any], timeout: float | None = REQUEST_TIMEOUT) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    async def _lifespan_startup(self) -> None:
        self._shutdown = asyncio.Event()
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        sent_startup = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_startup
            if not sent_startup:
                sent_startup = True
                return {"type": "lifespan.startup"}
            assert self._shutdown is not None
            await self._shutdown.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup") and not started.done():
                started.set_result(message)

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}},
                               receive, send)
            except Exception as exc:  # noqa: BLE001 - an app without lifespan support: carry on without it
                if not started.done():
                    log.debug("the app does not support lifespan: %s", exc)
                    started.set_result({"type": "lifespan.unsupported"})

        self._lifespan_task = asyncio.ensure_future(run())
        message = await started
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the app failed to start: {message.get('message', '')}")

    async def _lifespan_shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown.set()
        if self._lifespan_task is not None:
            try:
                await asyncio.wait_for(self._lifespan_task, timeout=30)
            except Exception:  # noqa: BLE001
                log.warning("the app did not shut down cleanly", exc_info=True)

    async def _call(self, scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        sent_body = False
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects before the response is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, send)
        return status, headers, b"".join(chunks)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "gradshield-webhook"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), fmt % args)

            def _reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
                self.send_response(status)
                names = set()
                for k, v in headers:
                    name = k.decode("latin-1")
                    names.add(name.lower())
                    self.send_header(name, v.decode("latin-1"))
                if "content-length" not in names:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                        if len(out) > server.max_body:
                            return None
                length = int(self.headers.get("Content-Length") or 0)
                if length > server.max_body:
                    return None
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                if body is None:
                    self.close_connection = True
                    self._reply(413, [(b"content-type", b"application/json")], b'{"error": "request body too large"}')
                    return
                split = urlsplit(self.path)
                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1",
                    "method": self.command,
                    "scheme": "http",
                    "path": unquote(split.path),
                    "raw_path": split.path.encode("latin-1", "replace"),
                    "query_string": split.query.encode("latin-1", "replace"),
                    "root_path": "",
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in self.headers.items()],
                    "client": self.client_address[:2],
                    "server": self.server.server_address[:2],
                }
                try:
                    status, headers, data = server._run(server._call(scope, body))
                except Exception:  # noqa: BLE001 - the app crashed: a 500, as an ASGI server answers
                    log.exception("unhandled error in the app")
                    status, headers, data = 500, [(b"content-type", b"application/json")], b'{"error": "internal error"}'
                self._reply(status, headers, data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        return Handler
