"""A fake Hugging Face Hub for tests: a real HTTP server on 127.0.0.1 that speaks the part of the Hub API we use.

The Hub cannot be reached from the test machines, so this server answers the exact HTTP calls that
`huggingface_hub` makes (read from its source, version 2.x), and records every request so a test can assert what
was sent. Point the client at it with `HfApi(endpoint=hub.url)` (or `endpoint=` of the `gradshield_lint.hub`
helpers). Clients must be allowed online: the `fake_hub` fixture in the tests clears `HF_HUB_OFFLINE`.

Endpoints (paths as `huggingface_hub` builds them; `{type}` is `dataset`, `model` or `space`):

- `POST /api/validate-yaml` - README.md metadata check made by `create_commit` before anything is uploaded.
- `POST /api/{type}s/{repo}/preupload/{revision}` - upload modes; every file is answered `regular` (so the
  content travels base64 in the commit payload; no LFS/Xet transfer is emulated) with the remote blob's git oid,
  which lets `create_commit` skip unchanged files.
- `POST /api/{type}s/{repo}/commit/{revision}[?create_pr=1]` - the NDJSON commit (`header`, `file`,
  `deletedFile`, `deletedFolder`); with `create_pr=1` it opens a pull request (`refs/pr/N`) instead.
- `GET /api/{type}s/{repo}[/revision/{revision}]` - repo info (`repo_info`, used after a no-op commit).
- `GET /api/{type}s/{repo}/discussions/{num}` - `get_discussion_details`.
- `POST /api/{type}s/{repo}/discussions/{num}/comment` - `comment_discussion`.
- `HEAD|GET /[{type}s/]{repo}/resolve/{revision}/{path}` - file download (`hf_hub_download`).

Writes need `Authorization: Bearer <token>` with the server's token (401 otherwise); an unknown repository is a 404
with `X-Error-Code: RepoNotFound`, as on the Hub. More routes can be added with `FakeHub.route`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

BOT_USER = "gradshield-bot"


def git_blob_oid(data: bytes) -> str:
    """The git sha1 of a blob (what the Hub answers as `oid` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Recorded:
    """One HTTP request the server received."""

    method: str
    path: str  # URL-decoded path, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Discussion:
    num: int
    title: str
    is_pull_request: bool
    author: str
    ref: str | None = None  # refs/pr/N for pull requests
    base: str = "main"
    status: str = "open"
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    refs: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    commits: list[dict[str, Any]] = field(default_factory=list)
    discussions: dict[int, Discussion] = field(default_factory=dict)

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """The files at a branch or `refs/pr/N` (a copy)."""
        return dict(self.refs[revision])


class Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


Handler = Callable[["FakeHub", Recorded, re.Match], tuple[int, Any, dict[str, str]] | tuple[int, Any]]


class FakeHub:
    """The server. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, token: str = "hf_fake_write_token", user: str = BOT_USER) -> None:
        self.token = token
        self.user = user
        self.requests: list[Recorded] = []
        self.repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._install_routes()

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                hub._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ state
    def create_repo(self, repo_id: str, repo_type: str = "dataset", files: dict[str, bytes] | None = None) -> Repo:
        repo = Repo(repo_id, repo_type)
        if files:
            repo.refs["main"] = dict(files)
            repo.heads["main"] = self._oid("init", repo_id)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def open_discussion(
        self,
        repo_id: str,
        title: str,
        *,
        repo_type: str = "dataset",
        pull_request: bool = False,
        author: str = "someone",
    ) -> Discussion:
        """Open a discussion (or an empty pull request) server-side, as a person on the Hub would."""
        repo = self.repo(repo_id, repo_type)
        num = self._next_num(repo)
        d = Discussion(num, title, pull_request, author)
        if pull_request:
            d.ref = f"refs/pr/{num}"
            repo.refs[d.ref] = repo.files("main")
            repo.heads[d.ref] = repo.heads["main"]
        repo.discussions[num] = d
        return d

    def find(self, method: str, path_regex: str) -> list[Recorded]:
        """Recorded requests whose method matches and whose path matches `path_regex` (re.search)."""
        return [r for r in self.requests if r.method == method and re.search(path_regex, r.path)]

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Add a handler `(hub, request, match) -> (status, body[, headers])` for `method` + path regex (fullmatch)."""

        def deco(fn: Handler) -> Handler:
            self._routes.insert(0, (method, re.compile(pattern), fn))
            return fn

        return deco

    # --------------------------------------------------------------------------------------------- plumbing
    def _oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((*parts, str(next(self._counter)))).encode()).hexdigest()

    def _next_num(self, repo: Repo) -> int:
        return max(repo.discussions, default=0) + 1

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if not length and h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(h.rfile)
        rec = Recorded(
            h.command, unquote(split.path), parse_qs(split.query), {k.lower(): v for k, v in h.headers.items()}, body
        )
        with self._lock:
            self.requests.append(rec)
            try:
                status, payload, headers = self._route(rec, split.path)
            except Reply as r:
                status, payload, headers = r.status, r.body, r.headers
            except Exception as exc:  # noqa: BLE001 - a bug in a handler must reach the test as a 500
                status, payload, headers = 500, {"error": f"fakehub: {type(exc).__name__}: {exc}"}, {}
        if isinstance(payload, (bytes, bytearray)):
            data = bytes(payload)
            headers.setdefault("Content-Type", "application/octet-stream")
        elif payload is None:
            data = b""
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        h.send_response(status)
        headers.setdefault("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _route(self, rec: Recorded, raw_path: str) -> tuple[int, Any, dict[str, str]]:
        for method, pattern, fn in self._routes:
            if method not in (rec.method, "*") and not (method == "GET" and rec.method == "HEAD"):
                continue
            m = pattern.fullmatch(raw_path)
            if m:
                out = fn(self, rec, m)
                return (out[0], out[1], dict(out[2]) if len(out) > 2 else {})  # type: ignore[misc]
        return 404, {"error": f"fakehub: no route for {rec.method} {raw_path}"}, {}

    def _auth(self, rec: Recorded) -> str:
        if rec.headers.get("authorization") != f"Bearer {self.token}":
            raise Reply(401, {"error": "Invalid credentials in Authorization header"})
        return self.user

    def _get_repo(self, type_plural: str, repo_id: str) -> Repo:
        repo = self.repos.get((type_plural.rstrip("s"), unquote(repo_id)))
        if repo is None:
            raise Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    def _ref(self, repo: Repo, revision: str) -> str:
        rev = unquote(revision)
        if rev not in repo.refs:
            raise Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return rev

    # ------------------------------------------------------------------------------------------------ routes
    def _install_routes(self) -> None:
        repo = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
        self._routes = [
            ("POST", re.compile(r"/api/validate-yaml"), _validate_yaml),
            ("POST", re.compile(rf"/api/{repo}/preupload/(?P<rev>[^/]+)"), _preupload),
            ("POST", re.compile(rf"/api/{repo}/commit/(?P<rev>[^/]+)"), _commit),
            ("GET", re.compile(rf"/api/{repo}/discussions/(?P<num>\d+)"), _discussion_details),
            ("POST", re.compile(rf"/api/{repo}/discussions/(?P<num>\d+)/comment"), _comment),
            ("GET", re.compile(rf"/api/{repo}(?:/revision/(?P<rev>[^/]+))?"), _repo_info),
            ("GET", re.compile(rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), _resolve),
            ("GET", re.compile(r"/(?P<type>)(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), _resolve),
        ]


def _read_chunked(rfile: Any) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return out
        out += rfile.read(size)
        rfile.readline()


def _validate_yaml(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    content = rec.json()["content"]
    match = REGEX_YAML_BLOCK.search(content)
    if match is None:
        return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return 400, {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []}
    if data is not None and not isinstance(data, dict):
        return 400, {"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []}
    return 200, {"errors": [], "warnings": []}


def _preupload(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    hub._auth(rec)
    repo = hub._get_repo(m["type"], m["repo"])
    rev = unquote(m["rev"])
    files = repo.refs.get(rev, {}) if rev in repo.refs else {}
    out = []
    for f in rec.json()["files"]:
        base64.b64decode(f["sample"])  # must be valid base64
        existing = files.get(f["path"])
        out.append(
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(existing) if existing is not None else None,
            }
        )
    return 200, {"files": out, "commitOid": repo.heads.get(rev)}


def _commit(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    user = hub._auth(rec)
    repo = hub._get_repo(m["type"], m["repo"])
    rev = hub._ref(repo, m["rev"])
    if rec.headers.get("content-type", "").split(";")[0] != "application/x-ndjson":
        return 400, {"error": "expected application/x-ndjson"}
    lines = rec.ndjson()
    if not lines or lines[0].get("key") != "header":
        return 400, {"error": "first line must be the header"}
    header = lines[0]["value"]
    if not header.get("summary"):
        return 400, {"error": "empty commit summary"}
    create_pr = rec.query.get("create_pr") == ["1"]
    files = repo.files(rev)
    changed: list[str] = []
    for item in lines[1:]:
        key, value = item["key"], item["value"]
        if key == "file":
            if value.get("encoding") != "base64":
                return 400, {"error": "unsupported encoding"}
            files[value["path"]] = base64.b64decode(value["content"])
            changed.append(value["path"])
        elif key == "deletedFile":
            files.pop(value["path"], None)
            changed.append(value["path"])
        elif key == "deletedFolder":
            prefix = value["path"].rstrip("/") + "/"
            for p in [p for p in files if p.startswith(prefix)]:
                files.pop(p)
                changed.append(p)
        else:  # lfsFile: this server answers `regular` for every file, so a client never sends one
            return 400, {"error": f"fakehub does not accept {key!r} operations"}
    kind = m["type"]
    prefix = "" if kind == "models" else f"/{kind}"
    oid = hub._oid(repo.repo_id, header["summary"])
    commit = {
        "oid": oid,
        "summary": header["summary"],
        "description": header.get("description", ""),
        "author": user,
        "files": changed,
        "revision": rev,
        "parent": repo.heads.get(rev),
    }
    body: dict[str, Any] = {
        "commitUrl": f"{hub.url}{prefix}/{repo.repo_id}/commit/{oid}",
        "commitOid": oid,
        "success": True,
    }
    if create_pr:
        num = hub._next_num(repo)
        ref = f"refs/pr/{num}"
        d = Discussion(num, header["summary"], True, user, ref=ref, base=rev)
        d.events.append(
            {
                "id": hub._oid("evt"),
                "type": "commit",
                "createdAt": _now(),
                "author": {"name": user},
                "data": {"subject": header["summary"], "oid": oid},
            }
        )
        repo.discussions[num] = d
        repo.refs[ref] = files
        repo.heads[ref] = oid
        commit["revision"] = ref
        commit["pr"] = num
        body["pullRequestUrl"] = f"{hub.url}{prefix}/{repo.repo_id}/discussions/{num}"
    else:
        repo.refs[rev] = files
        repo.heads[rev] = oid
        body["pullRequestUrl"] = None
    repo.commits.append(commit)
    return 200, body


def _repo_info(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    repo = hub._get_repo(m["type"], m["repo"])
    rev = hub._ref(repo, m["rev"] or "main")
    return 200, {
        "id": repo.repo_id,
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "author": repo.repo_id.split("/")[0],
        "sha": repo.heads[rev],
        "private": False,
        "siblings": [{"rfilename": p} for p in sorted(repo.refs[rev])],
    }


def _discussion_details(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    repo = hub._get_repo(m["type"], m["repo"])
    d = repo.discussions.get(int(m["num"]))
    if d is None:
        return 404, {"error": "Discussion not found"}
    out: dict[str, Any] = {
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "isPullRequest": d.is_pull_request,
        "author": {"name": d.author},
        "createdAt": _now(),
        "repo": {"name": repo.repo_id, "type": repo.repo_type},
        "events": d.events,
    }
    if d.is_pull_request:
        out["changes"] = {"base": f"refs/heads/{d.base}"}
        out["filesWithConflicts"] = []
        out["diff"] = ""
    return 200, out


def _comment(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any]:
    user = hub._auth(rec)
    repo = hub._get_repo(m["type"], m["repo"])
    d = repo.discussions.get(int(m["num"]))
    if d is None:
        return 404, {"error": "Discussion not found"}
    text = rec.json()["comment"]
    event = {
        "id": hub._oid("comment", text)[:24],
        "type": "comment",
        "createdAt": _now(),
        "author": {"name": user},
        "data": {"edited": False, "hidden": False, "latest": {"raw": text, "html": ""}},
    }
    d.events.append(event)
    return 200, {"newMessage": event}


def _resolve(hub: FakeHub, rec: Recorded, m: re.Match) -> tuple[int, Any, dict[str, str]]:
    repo = hub._get_repo(m["type"] or "models", m["repo"])
    rev = hub._ref(repo, m["rev"])
    path = unquote(m["path"])
    data = repo.refs[rev].get(path)
    if data is None:
        raise Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
    return (
        200,
        data,
        {
            "X-Repo-Commit": repo.heads[rev],
            "ETag": f'"{git_blob_oid(data)}"',
            "Content-Type": "application/octet-stream",
        },
    )
