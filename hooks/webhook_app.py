"""The gradshield-lint Hub webhook app: a small ASGI app that a Space or any server runs (see hooks/README.md).

    WEBHOOK_SECRET=... HF_TOKEN=hf_... GRADSHIELD_CONFIG=.gradshield.yaml python -m hooks.webhook_app --port 7860
    uvicorn --factory hooks.webhook_app:create_app --host 0.0.0.0 --port 7860      # where uvicorn is installed

What it does with each `POST /webhook` (or `POST /`):

1. Verifies the webhook secret: the `X-Webhook-Secret` header (or the `?secret=` query parameter the Hub also
   allows) against `WEBHOOK_SECRET`, in constant time; 401 otherwise, and nothing else happens.
2. Parses the Hub payload (`hooks.payload`) and keeps only dataset repositories, and of them: pull requests into
   main (scope `discussion`, action create/update, `isPullRequest`; or scope `repo.content` with an updated
   `refs/pr/N`) and pushes to main (`repo.content`, `refs/heads/main`). Everything else: 200 `ignored`.
3. Asks the Hub whether the event is its own (`hooks.jobs.resolve`): a commit or pull request whose title starts
   with `COMMIT_PREFIX` or whose author is the bot user (`GRADSHIELD_BOT_USER`, default: the owner of `HF_TOKEN`)
   is ignored, so the app's card commits never trigger another run. Also 200 `ignored`; a commit already checked
   (the Hub sends both `discussion` and `repo.content` events for a new pull request) is ignored too.
4. Queues the work and answers 202 at once; one worker thread runs the jobs in order with the one `Engine` built
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from gradshield_lint.errors import ConfigError

from .jobs import HubTarget, Ignored, Outcome, describe_exception, layout_of, resolve, run_job
from .payload import DEFAULT_BRANCH, Job, PayloadError, PullRequestJob, parse_event, triage

log = logging.getLogger("gradshield.webhook")

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_BODY = 4 * 1024 * 1024
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        secret = env.get("WEBHOOK_SECRET", "")
        if not secret:
            raise ConfigError("WEBHOOK_SECRET is not set: set it to the secret configured for the webhook on the Hub "
                              "(https://huggingface.co/settings/webhooks)")
        config = env.get("GRADSHIELD_CONFIG") or None
        return cls(
            secret=secret,
            token=env.get("HF_TOKEN") or None,
            endpoint=(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
            config_path=Path(config) if config else None,
            bot_user=env.get("GRADSHIELD_BOT_USER") or None,
        )


def _load_config(path: Path | None):
    from gradshield_lint.config import Config, load_config

    if path is None:
        return Config(root=Path.cwd())
    return load_config(path)


class JobRunner:
    """One worker thread running queued jobs in order; the same commit is never queued twice."""

    def __init__(self, run: Callable[[Job], Outcome], warm: Callable[[], None] | None = None, history: int = 200) -> None:
        self._run = run
        self._warm = warm
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._keys: collections.OrderedDict[tuple, str] = collections.OrderedDict()  # key -> "pending" | "done"
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

    def seen(self, job: Job) -> bool:
        with self._lock:
            return self.key(job) in self._keys

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the same commit is already queued or done."""
        k = self.key(job)
        with self._lock:
            if k in self._keys:
                return False
            self._keys[k] = "pending"
            while len(self._keys) > 5000:
                self._keys.popitem(last=False)
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
        with self._lock:
            if outcome.status == "failed":
                self._keys.pop(k, None)  # a replay of the event from the Hub's webhook page tries again
            else:
                self._keys[k] = "done"
        self.history.append(outcome)
        log.info("%s %s: %s%s", outcome.status, _label(job), outcome.detail, f" ({outcome.url})" if outcome.url else "")


def _label(job: Job) -> str:
    if isinstance(job, PullRequestJob):
        return f"{job.repo_id} pull request #{job.num} at {(job.sha or '?')[:8]}"
    return f"{job.repo_id} {job.branch} at {(job.sha or '?')[:8]}"


class WebhookApp:
    """The ASGI application. Build it with `create_app()` (from the environment) or directly for tests."""

    def __init__(self, settings: Settings, *, config=None, engine=None) -> None:
        from gradshield_lint.engine import Engine, settings_from_config

        self.settings = settings
        self.config = config if config is not None else _load_config(settings.config_path)
        layout_of(self.config)  # a baseline path that cannot live in a repository fails now, not on the first event
        self.engine = engine if engine is not None else Engine(settings_from_config(self.config))
        self.hub = HubTarget(settings.endpoint, settings.token, settings.bot_user)
        self._bot_lock = threading.Lock()
        self._bot_resolved = settings.bot_user is not None
        self.runner = JobRunner(self._run_job, warm=self._warm)

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
        """The bot's user name: `GRADSHIELD_BOT_USER`, else the owner of `HF_TOKEN` (asked once)."""
        with self._bot_lock:
            if not self._bot_resolved:
                self._bot_resolved = True
                if self.hub.token:
                    try:
                        self.hub.bot_user = self.hub.api().whoami()["name"]
                        log.info("acting as %s", self.hub.bot_user)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("cannot tell whose token HF_TOKEN is (%s); own events are recognised by the "
                                    "commit prefix only: set GRADSHIELD_BOT_USER", describe_exception(exc))
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
        self.bot_user()
        queued: list[dict[str, Any]] = []
        reasons: list[str] = []
        for job in t.jobs:
            if job.sha is not None and self.runner.seen(job):
                reasons.append(f"{_label(job)}: already checked")
                continue
            try:
                job = resolve(self.hub, job)
            except Ignored as exc:
                reasons.append(str(exc))
                continue
            if not self.runner.submit(job):
                reasons.append(f"{_label(job)}: already checked")
                continue
            queued.append({"kind": job.kind, "repo": job.repo_id, "sha": job.sha,
                           **({"num": job.num} if isinstance(job, PullRequestJob) else {"branch": job.branch})})
        if not queued:
            return 200, {"status": "ignored", "reason": "; ".join(reasons)}
        return 202, {"status": "queued", "jobs": queued, **({"ignored": reasons} if reasons else {})}

    def check_secret(self, headers: Mapping[str, str], query: str) -> bool:
        given = headers.get("x-webhook-secret")
        if given is None:
            given = (parse_qs(query).get("secret") or [""])[0]
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.settings.secret.encode("utf-8"))

    # --------------------------------------------------------------------------------------------------------- ASGI
    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.start()
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and path in ("/", "/health"):
            await _respond(send, 200, {
                "status": "ok" if self.runner.warm_error is None else "error",
                "ready": self.runner.ready.is_set(),
                "queued": self.runner.pending,
                **({"error": self.runner.warm_error} if self.runner.warm_error else {}),
            })
            return
        if path not in WEBHOOK_PATHS:
            await _respond(send, 404, {"error": "not found"})
            return
        if method != "POST":
            await _respond(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, {"error": "request body too large"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.check_secret(headers, scope.get("query_string", b"").decode("latin-1")):
            log.warning("rejected a webhook with a missing or wrong secret from %s", (scope.get("client") or ["?"])[0])
            await _respond(send, 401, {"error": "invalid or missing X-Webhook-Secret"})
            return
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            await _respond(send, 400, {"error": f"the body is not JSON: {exc}"})
            return
        try:
            status, answer = await asyncio.to_thread(self.handle_event, data)
        except PayloadError as exc:
            status, answer = 400, {"error": f"not a Hub webhook payload: {exc}"}
        except Exception as exc:  # noqa: BLE001 - the Hub could not be asked: a 502, the Hub's replay button retries
            log.exception("could not triage the event")
            status, answer = 502, {"error": describe_exception(exc)}
        if status != 200 or answer.get("status") != "ignored":
            log.info("webhook: %s %s", status, answer)
        else:
            log.info("webhook ignored: %s", answer.get("reason"))
        await _respond(send, status, answer)

    async def _lifespan(self, receive, send) -> None:
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


async def _read_body(receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def create_app(environ: Mapping[str, str] | None = None) -> WebhookApp:
    """The app configured from environment variables (WEBHOOK_SECRET, HF_TOKEN, HF_ENDPOINT, GRADSHIELD_CONFIG,
    GRADSHIELD_BOT_USER); a factory for `uvicorn --factory hooks.webhook_app:create_app`."""
    return WebhookApp(Settings.from_env(environ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks.webhook_app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")),
                        help="port (default $PORT or 7860, the port a Space exposes)")
    parser.add_argument("--server", choices=("auto", "uvicorn", "stdlib"), default="auto",
                        help="uvicorn when installed (auto), or the standard-library server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    use_uvicorn = args.server == "uvicorn"
    if args.server == "auto":
        try:
            import uvicorn  # noqa: F401

            use_uvicorn = True
        except ImportError:
            use_uvicorn = False
    if use_uvicorn:
        import uvicorn

        uvicorn.run(app, host=args.host, port=args.port)
    else:
        from .asgi_server import ASGIServer

        ASGIServer(app, args.host, args.port).serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
