"""The gradshield-lint Hub webhook app: an ASGI app that uvicorn serves (see hooks/README.md).

    WEBHOOK_SECRET=... HF_TOKEN=hf_... GRADSHIELD_CONFIG=.gradshield.yaml python -m hooks.webhook_app --port 7860
    uvicorn --factory hooks.webhook_app:create_app --host 0.0.0.0 --port 7860 --limit-concurrency 32 \
        --http hooks.protocol:HeadTimeoutH11Protocol

Before the app sees a request, the server bounds its head: 16 KiB, and `HEAD_TIMEOUT` seconds from the moment the
connection waits for it (`hooks.protocol`; uvicorn has no such timeout), so stalled connections cannot hold every
place of `limit_concurrency`.

What it does with each `POST /webhook` (or `POST /`):

1. Verifies the webhook secret before it reads a byte of the body: the `X-Webhook-Secret` header (or the
   `?secret=` query parameter the Hub also allows) against `WEBHOOK_SECRET`, in constant time; 401 otherwise, and
   the connection is closed, so an unknown sender cannot make the server read (or hold) a large body. The access
   log shows query values as `***` (`hooks.accesslog`).
2. Bounds the body: a `Content-Length` above `MAX_BODY` is refused (413) without reading; a chunked body is read
   up to `MAX_BODY` and refused beyond it; a body that is neither is refused (411). uvicorn (h11) itself refuses
   an invalid `Content-Length` (`-1`, `1e9`, two different values) with 400 before the app sees the request.
3. Parses the Hub payload with `huggingface_hub`'s models (`hooks.payload`), checks the repository id, and keeps
   only dataset repositories, and of them: pull requests into main (scope `discussion`, action create/update,
   `isPullRequest`; or scope `repo.content` with an updated `refs/pr/N`) and pushes to main (`repo.content`,
   `refs/heads/main`). Everything else: 200 `ignored`.
4. Asks the Hub whether the event is its own (`hooks.jobs.resolve`): a commit or pull request whose author is the
   bot user (`GRADSHIELD_BOT_USER`, default: the owner of `HF_TOKEN`, asked with `whoami` at startup) is ignored,
   so the app's card commits never trigger another run. A title never decides it: anyone can write one. Also 200
   `ignored`; a commit already queued, or checked in the last `DONE_TTL` seconds (the Hub sends both `discussion`
   and `repo.content` events for a new pull request), is ignored too.
5. Queues the work and answers 202 at once (503 with Retry-After when `MAX_QUEUED` jobs are pending; nothing of
   the event is kept); one worker thread runs the jobs in order with the one `Engine` built
   at start (the scoring model and ∇H are loaded once, in the worker, before the first job):
   - pull request: the rows it adds, scored against the baseline on main, posted as a comment on its discussion;
   - main: the dataset's rows checked against its baseline (or scanned without one), and the dataset card's
     report (`gradshield:` metadata and the marked section) pushed in a commit whose message starts with
     `COMMIT_PREFIX`.

`GET /` answers `{"status": "ok", "ready": ..., "queued": ...}` for health checks. Configuration comes from
environment variables (`Settings.from_env`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gradshield_lint.config import Config
from gradshield_lint.errors import ConfigError

from .accesslog import redact_access_log
from .jobs import HubTarget, Ignored, Outcome, describe_exception, layout_of, resolve, run_job
from .payload import DEFAULT_BRANCH, Job, PayloadError, PullRequestJob, parse_event, triage
from .protocol import HEAD_TIMEOUT, header_timeout_protocol

if TYPE_CHECKING:
    from gradshield_lint.scoring.engine import Engine

log = logging.getLogger("gradshield.webhook")

Receive = Callable[[], Awaitable[dict[str, Any]]]
"""ASGI's `receive`."""
Send = Callable[[dict[str, Any]], Awaitable[None]]
"""ASGI's `send`."""

DEFAULT_ENDPOINT = "https://huggingface.co"
# Hub webhook payloads are a few kilobytes; nothing larger is read.
MAX_BODY = 1024 * 1024
BODY_TIMEOUT = 30.0  # seconds for the whole body, once the secret checked out
MAX_QUEUED = 64  # jobs waiting or running; an event beyond gets 503 and Retry-After
DONE_TTL = 600.0  # seconds a checked commit is remembered, so that the Hub's second event for it is ignored
DONE_KEYS = 5000  # and at most this many of them
RETRY_AFTER = 60  # seconds, in the answer to an event that finds the queue full
WEBHOOK_PATHS = ("/", "/webhook", "/webhooks/gradshield")


@dataclass(frozen=True)
class Settings:
    """The app's configuration (from the environment: `Settings.from_env`)."""

    secret: str
    token: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    config_path: Path | None = None
    bot_user: str | None = None  # None: the owner of `token` (`whoami`)
    branch: str = DEFAULT_BRANCH
    max_body: int = MAX_BODY
    max_queued: int = MAX_QUEUED
    done_ttl: float = DONE_TTL
    head_timeout: float = HEAD_TIMEOUT  # uvicorn_config's deadline for each request head

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        secret = env.get("WEBHOOK_SECRET", "")
        if not secret:
            raise ConfigError(
                "WEBHOOK_SECRET is not set: set it to the secret configured for the webhook on the Hub "
                "(https://huggingface.co/settings/webhooks)"
            )
        config = env.get("GRADSHIELD_CONFIG") or None
        return cls(
            secret=secret,
            token=env.get("HF_TOKEN") or None,
            endpoint=(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
            config_path=Path(config) if config else None,
            bot_user=env.get("GRADSHIELD_BOT_USER") or None,
        )


def _load_config(path: Path | None) -> Config:
    from gradshield_lint.config import load_config

    if path is None:
        return Config(root=Path.cwd())
    return load_config(path)


class QueueFull(RuntimeError):
    """Every place in the job queue is taken (answered 503 with Retry-After; the Hub's replay button retries)."""


class JobRunner:
    """One worker thread running queued jobs in order.

    At most `max_queued` jobs wait or run at once (`QueueFull` beyond): a burst of events costs bounded memory and
    the sender is told to come back. A commit waiting or running is never queued again; its key leaves the pending
    set when its job ends. A job that failed can be queued again at once (the Hub's replay button); one that ended
    otherwise is remembered for `done_ttl` seconds, long enough to ignore the second event the Hub sends for the
    same commit (`discussion` and `repo.content` for a new pull request), and can be queued again after that (a
    replay once the baseline on main changed)."""

    def __init__(
        self,
        run: Callable[[Job], Outcome],
        warm: Callable[[], None] | None = None,
        history: int = 200,
        *,
        max_queued: int = MAX_QUEUED,
        done_ttl: float = DONE_TTL,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, not {max_queued}")
        self._run = run
        self._warm = warm
        self.max_queued = max_queued
        self.done_ttl = done_ttl
        # Unbounded as a Queue: `submit` bounds it under the lock, and `stop` must always be able to put its None.
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: set[tuple] = set()  # queued or running
        self._done: collections.OrderedDict[tuple, float] = collections.OrderedDict()  # key -> when it ended
        self.history: collections.deque[Outcome] = collections.deque(maxlen=history)
        self.ready = threading.Event()
        self.warm_error: str | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def key(job: Job) -> tuple:
        where = job.num if isinstance(job, PullRequestJob) else job.branch
        return (job.kind, job.repo_id, where, job.sha)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="gradshield-webhook-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None

    def _forget_old(self) -> None:
        """Drop done keys older than `done_ttl` (and beyond `DONE_KEYS`, the oldest); call with the lock held."""
        horizon = time.monotonic() - self.done_ttl
        while self._done and (len(self._done) > DONE_KEYS or next(iter(self._done.values())) <= horizon):
            self._done.popitem(last=False)

    def seen(self, job: Job) -> str | None:
        """`"queued"` while the same commit waits or runs, `"checked"` for a while after it ended, else None."""
        k = self.key(job)
        with self._lock:
            self._forget_old()
            if k in self._pending:
                return "queued"
            return "checked" if k in self._done else None

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the same commit is already queued (or recently checked); `QueueFull` when
        `max_queued` jobs are pending."""
        k = self.key(job)
        with self._lock:
            self._forget_old()
            if k in self._pending or k in self._done:
                return False
            if len(self._pending) >= self.max_queued:
                raise QueueFull(f"{len(self._pending)} jobs are pending, the most this server queues")
            self._pending.add(k)
        self._queue.put(job)
        return True

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout: float = 300) -> bool:
        """Block until every queued job is done (True) or `timeout` seconds pass (False)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def _loop(self) -> None:
        if self._warm is not None:
            try:
                self._warm()
            except Exception as exc:  # noqa: BLE001 - jobs report the same error; the server stays up for health checks
                self.warm_error = describe_exception(exc)
                log.exception("could not load the scoring model")
        self.ready.set()
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._one(job)
            finally:
                self._queue.task_done()

    def _one(self, job: Job) -> None:
        k = self.key(job)
        try:
            outcome = self._run(job)
        except Exception as exc:  # noqa: BLE001 - one failed job never stops the worker
            log.exception("job %s failed", k)
            outcome = Outcome(job, "failed", describe_exception(exc))
        except BaseException:
            self._finish(k, done=False)
            raise
        self._finish(k, done=outcome.status != "failed")  # a failed job may be replayed from the Hub at once
        self.history.append(outcome)
        log.info("%s %s: %s%s", outcome.status, _label(job), outcome.detail, f" ({outcome.url})" if outcome.url else "")

    def _finish(self, k: tuple, *, done: bool) -> None:
        with self._lock:
            self._pending.discard(k)
            if done:
                self._done[k] = time.monotonic()
                self._done.move_to_end(k)


def _label(job: Job) -> str:
    if isinstance(job, PullRequestJob):
        return f"{job.repo_id} pull request #{job.num} at {(job.sha or '?')[:8]}"
    return f"{job.repo_id} {job.branch} at {(job.sha or '?')[:8]}"


class WebhookApp:
    """The ASGI application. Build it with `create_app()` (from the environment) or directly for tests."""

    def __init__(self, settings: Settings, *, config: Config | None = None, engine: Engine | None = None) -> None:
        from gradshield_lint.scoring.engine import Engine, EngineSettings

        self.settings = settings
        redact_access_log()  # `?secret=` must not reach the access log (`uvicorn --factory` configures logging first)
        self.config = config if config is not None else _load_config(settings.config_path)
        layout_of(self.config)  # a baseline path that cannot live in a repository fails now, not on the first event
        self.engine = engine if engine is not None else Engine(EngineSettings.from_config(self.config))
        self.hub = HubTarget(settings.endpoint, settings.token, settings.bot_user)
        self._bot_lock = threading.Lock()
        self.runner = JobRunner(
            self._run_job, warm=self._warm, max_queued=settings.max_queued, done_ttl=settings.done_ttl
        )

    # ------------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker (idempotent; lifespan startup and the first request both call it)."""
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()

    def wait_idle(self, timeout: float = 300) -> bool:
        return self.runner.wait_idle(timeout)

    @property
    def history(self) -> list[Outcome]:
        return list(self.runner.history)

    def _warm(self) -> None:
        self.bot_user()
        _ = self.engine.gradient  # loads the scoring model and ∇H (cached on disk under GRADSHIELD_CACHE)
        self.engine.fingerprint()

    def bot_user(self) -> str | None:
        """The bot's user name: `GRADSHIELD_BOT_USER`, else the owner of `HF_TOKEN` (`whoami`, asked at startup and
        again on each event until it answers). None while it is not known: no job is queued then (`BotUnknown`)."""
        with self._bot_lock:
            if self.hub.bot_user is None and self.hub.token:
                try:
                    self.hub.bot_user = self.hub.api().whoami()["name"]
                    log.info("acting as %s", self.hub.bot_user)
                except Exception as exc:  # noqa: BLE001 - the Hub may be down; the next event asks again
                    log.warning(
                        "cannot tell whose token HF_TOKEN is (%s); no event is checked until it is known: "
                        "set GRADSHIELD_BOT_USER to skip the lookup",
                        describe_exception(exc),
                    )
            return self.hub.bot_user

    def _run_job(self, job: Job) -> Outcome:
        return run_job(self.hub, self.engine, self.config, job)

    # ------------------------------------------------------------------------------------------------------- events
    def handle_event(self, data: Any) -> tuple[int, dict[str, Any]]:
        """What to answer for a verified payload (blocking: it may ask the Hub whether the event is the bot's own)."""
        event = parse_event(data)
        t = triage(event, branch=self.settings.branch)
        if t.ignored is not None:
            return 200, {"status": "ignored", "reason": t.ignored}
        if self.bot_user() is None:
            # Without the bot's name its own card commits cannot be told apart, and checking them would loop.
            raise BotUnknown(
                "the bot's Hub user is not known (HF_TOKEN missing or `whoami` failed): set HF_TOKEN "
                "or GRADSHIELD_BOT_USER, then replay the event"
            )
        queued: list[dict[str, Any]] = []
        reasons: list[str] = []
        for job in t.jobs:
            state = self.runner.seen(job) if job.sha is not None else None
            if state is not None:
                reasons.append(f"{_label(job)}: already {state}")
                continue
            try:
                job = resolve(self.hub, job)
            except Ignored as exc:
                reasons.append(str(exc))
                continue
            if not self.runner.submit(job):
                reasons.append(f"{_label(job)}: already {self.runner.seen(job) or 'checked'}")
                continue
            queued.append(
                {
                    "kind": job.kind,
                    "repo": job.repo_id,
                    "sha": job.sha,
                    **({"num": job.num} if isinstance(job, PullRequestJob) else {"branch": job.branch}),
                }
            )
        if not queued:
            return 200, {"status": "ignored", "reason": "; ".join(reasons)}
        return 202, {"status": "queued", "jobs": queued, **({"ignored": reasons} if reasons else {})}

    def check_secret(self, headers: list[tuple[bytes, bytes]], query: bytes) -> bool:
        """The `X-Webhook-Secret` header (else `?secret=`) equals the secret; compared in constant time."""
        given: bytes | None = next((v for k, v in headers if k.lower() == b"x-webhook-secret"), None)
        if given is None:
            values = parse_qs(query.decode("latin-1")).get("secret") or [""]
            given = values[0].encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.settings.secret.encode("utf-8"))

    # --------------------------------------------------------------------------------------------------------- ASGI
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.start()
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and path in ("/", "/health"):
            await _respond(
                send,
                200,
                {
                    "status": "ok" if self.runner.warm_error is None else "error",
                    "ready": self.runner.ready.is_set(),
                    "queued": self.runner.pending,
                    **({"error": self.runner.warm_error} if self.runner.warm_error else {}),
                },
            )
            return
        # Every early answer below closes the connection: its body (if any) is never read.
        if path not in WEBHOOK_PATHS:
            await _respond(send, 404, {"error": "not found"}, close=True)
            return
        if method != "POST":
            await _respond(send, 405, {"error": "use POST"}, [(b"allow", b"POST")], close=True)
            return
        headers = scope.get("headers", [])
        if not self.check_secret(headers, scope.get("query_string", b"")):
            log.warning("rejected a webhook with a missing or wrong secret from %s", (scope.get("client") or ["?"])[0])
            await _respond(send, 401, {"error": "invalid or missing X-Webhook-Secret"}, close=True)
            return
        try:
            body = await asyncio.wait_for(read_body(receive, headers, self.settings.max_body), BODY_TIMEOUT)
        except BodyError as exc:
            await _respond(send, exc.status, {"error": str(exc)}, close=True)
            return
        except (asyncio.TimeoutError, TimeoutError):  # one class since Python 3.11
            await _respond(send, 408, {"error": f"the body did not arrive within {BODY_TIMEOUT:g} s"}, close=True)
            return
        if body is None:  # the client went away
            return
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, 5000-digit ints
            await _respond(send, 400, {"error": f"the body is not JSON: {describe_exception(exc)}"})
            return
        try:
            status, answer = await asyncio.to_thread(self.handle_event, data)
        except PayloadError as exc:
            status, answer = 400, {"error": f"not a Hub webhook payload: {exc}"}
        except BotUnknown as exc:
            status, answer = 503, {"error": str(exc)}
        except QueueFull as exc:
            log.warning("webhook: 503, the job queue is full (%s)", exc)
            retry = [(b"retry-after", str(RETRY_AFTER).encode())]
            await _respond(send, 503, {"error": f"too many events at once: {exc}; retry later"}, retry)
            return
        except Exception as exc:  # noqa: BLE001 - the Hub could not be asked: a 502, the Hub's replay button retries
            log.exception("could not triage the event")
            status, answer = 502, {"error": describe_exception(exc)}
        if status != 200 or answer.get("status") != "ignored":
            log.info("webhook: %s %s", status, json.dumps(answer))
        else:
            log.info("webhook ignored: %s", json.dumps(answer.get("reason")))  # JSON: no raw newlines in the log
        await _respond(send, status, answer)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:  # noqa: BLE001
                    await send({"type": "lifespan.startup.failed", "message": describe_exception(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return


class BotUnknown(RuntimeError):
    """The bot's own user name is not known yet (answered 503; the Hub's replay button retries)."""


class BodyError(Exception):
    """A request body refused before or while reading it; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(receive: Receive, headers: list[tuple[bytes, bytes]], max_body: int) -> bytes | None:
    """The request body, at most `max_body` bytes (`BodyError` 413 beyond, 411 without a length); None when the
    client disconnected. A declared `Content-Length` above the bound is refused before a byte is read; a chunked
    body is read chunk by chunk and refused as soon as it passes the bound. (uvicorn already refused an invalid
    `Content-Length` with 400, and never hands the app more bytes than a valid one declares.)"""
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise BodyError(400, "invalid Content-Length")
        if int(lengths[0]) > max_body:
            raise BodyError(413, f"request body too large (the limit is {max_body} bytes)")
    elif not chunked:
        raise BodyError(411, "a Content-Length (or a chunked body) is required")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise BodyError(413, f"request body too large (the limit is {max_body} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    payload: dict[str, Any],
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the server then closes the connection instead of reading (and discarding) the unread body
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def create_app(environ: Mapping[str, str] | None = None) -> WebhookApp:
    """The app configured from environment variables (WEBHOOK_SECRET, HF_TOKEN, HF_ENDPOINT, GRADSHIELD_CONFIG,
    GRADSHIELD_BOT_USER); the factory for `uvicorn --factory hooks.webhook_app:create_app`."""
    return WebhookApp(Settings.from_env(environ))


def uvicorn_config(app: WebhookApp, host: str, port: int, **kwargs: Any) -> Any:
    """The uvicorn configuration the app is meant to run with: lifespan on (it starts the worker and learns the
    bot's user), bounded concurrency, header size and header time (`hooks.protocol`: uvicorn has no option for the
    last), short keep-alive. `kwargs` override (e.g. `log_level`; `head_timeout`: seconds, default the app's
    `Settings.head_timeout`)."""
    import uvicorn

    head_timeout = float(kwargs.pop("head_timeout", app.settings.head_timeout))
    options: dict[str, Any] = {
        "http": header_timeout_protocol(head_timeout),
        "host": host,
        "port": port,
        "lifespan": "on",
        "limit_concurrency": 32,  # 503 beyond: each webhook needs only a few milliseconds
        "timeout_keep_alive": 5,
        "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers
        "server_header": False,
        "proxy_headers": False,  # the client address logged is the peer's, not a header anyone can set
    }
    options.update(kwargs)
    config = uvicorn.Config(app, **options)
    redact_access_log()  # again after uvicorn's logging configuration, which a custom log_config may replace
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks.webhook_app", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host", default=os.environ.get("HOST", "0.0.0.0"), help="address to listen on (default 0.0.0.0)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "7860")),
        help="port (default $PORT or 7860, the port a Space exposes)",
    )
    args = parser.parse_args(argv)
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, args.host, args.port, log_level=level.lower()))
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
