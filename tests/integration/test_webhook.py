"""The Hub webhook app (`hooks/webhook_app.py`), run for real: uvicorn serving the ASGI app on 127.0.0.1 (a free port
the OS picks, stopped when the module's tests end), with the app's own uvicorn settings (`uvicorn_config`), and real
HTTP requests carrying real-shaped Hub webhook payloads (version 3, as `huggingface_hub.WebhookPayload` reads them).
Requests that probe the server's limits are written byte by byte on a raw socket, every loop bounded by a byte
count and a deadline.

The Hugging Face Hub cannot be reached from the test machines, so the app talks to a fake Hub: a server started on
127.0.0.1 (`tests/fakehub.py`) that speaks the Hub's HTTP protocol for the calls `huggingface_hub` makes. This module
adds the endpoints the app needs beyond the card push (repository tree listing, file download at a commit, the
commit listing, `whoami-v2`) with `FakeHub.route`, and puts real dataset files, a real baseline and real cards in
the fake repositories. The scoring model is a tiny random llama with a four-probe file: a row whose reply is that
probe's compliance opening to that probe's prompt scores far above ordinary rows (see tests/helpers.py), so it is the
harmful row here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import json
import re
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from fakehub import BOT_USER, FakeHub, Reply, git_blob_oid
from helpers import PROBES, base_config, compliance_row, jsonl, ordinary_rows, save_tiny_model
from huggingface_hub import DatasetCard

from gradshield_lint.hub import COMMIT_PREFIX, push_card
from gradshield_lint.io.rows import Message, row_id

SECRET = "s3cret-webhook-value"
PERSON = "alice"


# ------------------------------------------------------------------------------------------------ fake Hub additions


def _files_at(hub: FakeHub, repo, rev: str) -> tuple[str, dict[str, bytes]]:
    """(ref, files) for a branch, `refs/pr/N`, or the commit a ref points at."""
    rev = unquote(rev)
    if rev in repo.refs:
        return rev, repo.refs[rev]
    for ref, head in repo.heads.items():
        if head == rev:
            return ref, repo.refs[ref]
    raise Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})


def add_routes(hub: FakeHub) -> None:
    """The endpoints the webhook app calls that fakehub.py does not answer (paths as `huggingface_hub` 2.x builds them)."""
    repo_re = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"

    @hub.route("GET", rf"/api/{repo_re}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
    def tree(hub: FakeHub, rec, m):  # list_repo_tree(recursive=True)
        repo = hub._get_repo(m["type"], m["repo"])
        _, files = _files_at(hub, repo, m["rev"])
        prefix = unquote(m["path"] or "").strip("/")
        prefix = prefix + "/" if prefix else ""
        recursive = rec.query.get("recursive") in (["True"], ["true"], ["1"])
        out, dirs = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if d not in dirs and (recursive or i == 1):
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                data = files[path]
                out.append({"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path})
        return 200, out

    @hub.route("GET", rf"/{repo_re}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
    def resolve(hub: FakeHub, rec, m):  # hf_hub_download, also at a commit sha
        repo = hub._get_repo(m["type"], m["repo"])
        ref, files = _files_at(hub, repo, m["rev"])
        data = files.get(unquote(m["path"]))
        if data is None:
            raise Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        return 200, data, {"X-Repo-Commit": repo.heads[ref], "ETag": f'"{git_blob_oid(data)}"'}

    @hub.route("GET", rf"/api/{repo_re}/commits/(?P<rev>[^/]+)")
    def commits(hub: FakeHub, rec, m):  # list_repo_commits (newest first)
        repo = hub._get_repo(m["type"], m["repo"])
        ref, _ = _files_at(hub, repo, m["rev"])
        by_oid = {c["oid"]: c for c in repo.commits}
        out, oid = [], repo.heads[ref]
        while oid in by_oid:
            c = by_oid[oid]
            out.append(
                {
                    "id": oid,
                    "title": c["summary"],
                    "message": c.get("description", ""),
                    "authors": [{"user": c["author"], "avatar": ""}],
                    "date": "2026-01-01T00:00:00.000Z",
                }
            )
            oid = c.get("parent")
        if oid:
            out.append(
                {
                    "id": oid,
                    "title": "initial commit",
                    "message": "",
                    "authors": [{"user": PERSON, "avatar": ""}],
                    "date": "2026-01-01T00:00:00.000Z",
                }
            )
        return 200, out

    @hub.route("GET", r"/api/whoami-v2")
    def whoami(hub: FakeHub, rec, m):
        return 200, {"type": "user", "name": hub._auth(rec), "auth": {"type": "access_token"}}


def push_as(
    hub: FakeHub, repo_id: str, ref: str, files: dict[str, bytes], *, author: str = PERSON, title: str = "Add rows"
) -> str:
    """A commit by a person (not through the API as the bot): the files change at `ref`; returns the new sha."""
    repo = hub.repo(repo_id)
    parent = repo.heads.get(ref)
    new = dict(repo.refs.get(ref, {}))
    new.update(files)
    oid = hashlib.sha1(f"{repo_id}\0{ref}\0{title}\0{len(repo.commits)}\0{time.time_ns()}".encode()).hexdigest()
    repo.refs[ref] = new
    repo.heads[ref] = oid
    repo.commits.append(
        {
            "oid": oid,
            "summary": title,
            "description": "",
            "author": author,
            "files": sorted(files),
            "revision": ref,
            "parent": parent,
        }
    )
    m = re.fullmatch(r"refs/pr/(\d+)", ref)
    if m:
        repo.discussions[int(m.group(1))].events.append(
            {
                "id": oid[:24],
                "type": "commit",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "author": {"name": author},
                "data": {"subject": title, "oid": oid},
            }
        )
    return oid


# ----------------------------------------------------------------------------------------------------- payloads


def _repo_part(repo_id: str, repo_type: str = "dataset", head_sha: str | None = None) -> dict[str, Any]:
    plural = "" if repo_type == "model" else f"{repo_type}s/"
    part = {
        "type": repo_type,
        "name": repo_id,
        "id": "6366c000a2abcdf2fd69a080",
        "private": False,
        "url": {
            "web": f"https://huggingface.co/{plural}{repo_id}",
            "api": f"https://huggingface.co/api/{repo_type}s/{repo_id}",
        },
        "owner": {"id": "61d2000c3c2083e1c08af22d"},
    }
    if head_sha is not None:
        part["headSha"] = head_sha
    return part


def pr_payload(
    repo_id: str,
    num: int,
    *,
    action: str = "create",
    title: str = "Add more chats",
    status: str = "open",
    repo_type: str = "dataset",
    scope: str = "discussion",
) -> dict[str, Any]:
    """What the Hub sends when a pull request is opened (as in the Hub's webhook documentation)."""
    plural = "" if repo_type == "model" else f"{repo_type}s/"
    url = f"https://huggingface.co/{plural}{repo_id}/discussions/{num}"
    payload = {
        "event": {"action": action, "scope": scope},
        "repo": _repo_part(repo_id, repo_type),
        "discussion": {
            "id": "6399f58518721fdd27fc9ca9",
            "title": title,
            "url": {"web": url, "api": f"https://huggingface.co/api/{repo_type}s/{repo_id}/discussions/{num}"},
            "status": status,
            "author": {"id": "61d2f90c3c2083e1c08af22d"},
            "num": num,
            "isPullRequest": True,
            "changes": {"base": "refs/heads/main"},
        },
        "webhook": {"id": "6390e855e30d9209411de93b", "version": 3},
    }
    if action == "create" or scope == "discussion.comment":
        payload["comment"] = {
            "id": "6399f58518721fdd27fc9caa",
            "author": {"id": "61d2f90c3c2083e1c08af22d"},
            "content": "Adds rows",
            "hidden": False,
            "url": {"web": url + "#6399f58518721fdd27fc9caa"},
        }
    return payload


def content_payload(
    repo_id: str, ref: str, old: str | None, new: str | None, *, main_sha: str, repo_type: str = "dataset"
) -> dict[str, Any]:
    """What the Hub sends for new commits (`repo.content`): on main, or on a pull request's `refs/pr/N`."""
    return {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": _repo_part(repo_id, repo_type, head_sha=main_sha),
        "updatedRefs": [{"ref": ref, "oldSha": old, "newSha": new}],
        "webhook": {"id": "6390e855e30d9209411de93b", "version": 3},
    }


def test_payloads_are_real_shaped():
    """The payloads these tests send validate against huggingface_hub's own model of the Hub's webhook payload."""
    pytest.importorskip("pydantic")
    from huggingface_hub import WebhookPayload

    for p in (
        pr_payload("alice/chats", 3),
        pr_payload("alice/chats", 3, action="update"),
        content_payload("alice/chats", "refs/pr/3", None, "a" * 40, main_sha="b" * 40),
        content_payload("alice/chats", "refs/heads/main", "c" * 40, "a" * 40, main_sha="a" * 40),
    ):
        parsed = WebhookPayload.model_validate(p)
        assert parsed.webhook.version == 3 and parsed.repo.name == "alice/chats"


# ------------------------------------------------------------------------------------------------------ fixtures


def post(
    url: str,
    payload: Any,
    secret: str | None = SECRET,
    *,
    path: str = "/webhook",
    raw: bytes | None = None,
    query: str = "",
) -> tuple[int, dict[str, Any]]:
    """A real HTTP POST, as the Hub makes it."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "huggingface-webhooks"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    req = urllib.request.Request(url + path + query, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextlib.contextmanager
def serve(app, **options):
    """uvicorn serving `app` on 127.0.0.1 in a thread, on a port the OS picks; stopped (lifespan shutdown) on exit.
    `options` go to `uvicorn_config` (a second server of the module's app passes `lifespan="off"`: its shutdown
    must not stop the app's worker)."""
    import uvicorn

    from hooks.webhook_app import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, **{"log_level": "warning", **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tokenizer):
    """The fake Hub, and the webhook app configured from the environment, served on 127.0.0.1."""
    from gradshield_lint.lint.baseline import dumps_baseline
    from gradshield_lint.lint.service import create_baseline, read_all
    from hooks.webhook_app import create_app

    root = tmp_path_factory.mktemp("webhook")
    model_dir = save_tiny_model(root / "tiny-llama", tokenizer)
    (root / "probes.jsonl").write_text(jsonl(PROBES), encoding="utf-8")
    cfg = base_config(model_dir)  # the tiny model, the 4-probe file, short rows
    (root / "server.gradshield.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")

    with pytest.MonkeyPatch.context() as mp:
        from huggingface_hub import constants

        mp.setattr(constants, "HF_HUB_OFFLINE", False)  # the Makefile and conftest set HF_HUB_OFFLINE=1
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("GRADSHIELD_CACHE", str(root / "cache"))
        with FakeHub() as hub:
            add_routes(hub)
            app = create_app(
                {
                    "WEBHOOK_SECRET": SECRET,
                    "HF_TOKEN": hub.token,
                    "HF_ENDPOINT": hub.url,
                    "GRADSHIELD_CONFIG": str(root / "server.gradshield.yaml"),
                    # no GRADSHIELD_BOT_USER: the app asks whoami-v2 who owns HF_TOKEN
                }
            )
            # The baseline a maintainer made on main with the same settings: 24 ordinary rows.
            (root / "main.jsonl").write_text(jsonl(ordinary_rows(24)), encoding="utf-8")
            baseline, _ = create_baseline(app.engine, read_all([root / "main.jsonl"], None), app.config.threshold)
            with serve(app) as url:
                # Lifespan startup started the worker, which loads the model and asks whoami-v2 before any job.
                assert app.runner.ready.wait(300) and app.runner.warm_error is None, app.runner.warm_error
                assert app.hub.bot_user == BOT_USER
                yield Stack(hub, app, url, dumps_baseline(baseline).encode())


class Stack:
    def __init__(self, hub: FakeHub, app, url: str, baseline: bytes) -> None:
        self.hub, self.app, self.url, self.baseline = hub, app, url, baseline

    def dataset(self, repo_id: str, *, baseline: bool = True, card: bytes | None = None) -> None:
        files = {"data/train.jsonl": jsonl(ordinary_rows(24)).encode(), ".gitattributes": b"*.parquet filter=lfs\n"}
        if baseline:
            files[".gradshield-baseline.json"] = self.baseline
        if card is not None:
            files["README.md"] = card
        self.hub.create_repo(repo_id, files=files)

    def settle(self) -> None:
        assert self.app.wait_idle(300), "the webhook app's jobs did not finish"

    def outcomes(self, repo_id: str) -> list:
        return [o for o in self.app.history if o.job.repo_id == repo_id]

    def comments(self, repo_id: str, num: int) -> list[str]:
        return [
            r.json()["comment"] for r in self.hub.find("POST", rf"^/api/datasets/{repo_id}/discussions/{num}/comment$")
        ]

    def writes(self) -> list:
        return [r for r in self.hub.requests if r.method == "POST"]


def _flagged_id() -> str:
    m = compliance_row(0)["messages"]
    return row_id([Message(x["role"], x["content"]) for x in m])


# --------------------------------------------------------------------------------------------------------- tests


def test_health(stack):
    with urllib.request.urlopen(stack.url + "/", timeout=30) as resp:
        body = json.loads(resp.read())
    assert resp.status == 200 and body["status"] == "ok"


def test_pull_request_adding_compliance_rows_gets_a_comment_naming_the_row(stack):
    repo_id = "alice/chats-flagged"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "Add more chats", pull_request=True, author=PERSON)
    data = jsonl(ordinary_rows(24) + ordinary_rows(3, start=24) + [compliance_row(0)]).encode()
    sha = push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": data})

    status, body = post(stack.url, pr_payload(repo_id, pr.num))
    assert status == 202, body
    assert body["status"] == "queued" and body["jobs"] == [{"kind": "pr", "repo": repo_id, "sha": sha, "num": pr.num}]
    # The Hub also sends a repo.content event for the new refs/pr/N: the same commit is not checked twice.
    main_sha = stack.hub.repo(repo_id).heads["main"]
    status, body = post(stack.url, content_payload(repo_id, pr.ref, None, sha, main_sha=main_sha))
    assert status == 200 and body["status"] == "ignored", body
    assert re.search(r"already (queued|checked)", body["reason"]), body
    stack.settle()

    comments = stack.comments(repo_id, pr.num)
    assert len(comments) == 1, comments
    text = comments[0]
    assert ":x: the change fails" in text
    assert f"`{_flagged_id()[:12]}`" in text and "`data/train.jsonl:28`" in text  # the compliance row, by id and line
    assert "Content warning" in text or "content warning" in text.lower()
    assert "4 rows added to `data/train.jsonl`, 4 of them new to the baseline on `main`" in text
    assert text.count("data/train.jsonl:") == 1  # only that row is flagged
    req = stack.hub.find("POST", rf"^/api/datasets/{repo_id}/discussions/{pr.num}/comment$")[0]
    assert req.headers["authorization"] == f"Bearer {stack.hub.token}"
    # The comment is on the discussion (read back through huggingface_hub) and nothing was committed anywhere.
    assert stack.hub.repo(repo_id).discussions[pr.num].events[-1]["data"]["latest"]["raw"] == text
    assert stack.hub.repo(repo_id).commits[-1]["oid"] == sha
    [outcome] = stack.outcomes(repo_id)
    assert outcome.status == "commented" and [f.id for f in outcome.result.findings] == [_flagged_id()]
    # What the app read: the tree at the PR commit and on main, the changed file at both revisions, main's baseline.
    gets = {r.path for r in stack.hub.requests if r.method == "GET" and repo_id in r.path}
    assert f"/api/datasets/{repo_id}/tree/{sha}" in gets and f"/api/datasets/{repo_id}/tree/main" in gets
    assert f"/datasets/{repo_id}/resolve/{sha}/data/train.jsonl" in gets
    assert f"/datasets/{repo_id}/resolve/main/.gradshield-baseline.json" in gets
    assert not any(p.endswith("/.gitattributes") for p in gets)  # not a dataset file


def test_pull_request_adding_ordinary_rows_gets_a_clean_comment(stack):
    repo_id = "alice/chats-clean"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "More trivia", pull_request=True, author=PERSON)
    sha = push_as(
        stack.hub,
        repo_id,
        pr.ref,
        {
            "data/train.jsonl": jsonl(ordinary_rows(28)).encode(),
            "data/extra.jsonl": jsonl(ordinary_rows(2, start=40)).encode(),
        },
    )
    main_sha = stack.hub.repo(repo_id).heads["main"]
    # This time the repo.content event of the new commit comes first; the secret travels in the query string.
    status, body = post(
        stack.url,
        content_payload(repo_id, pr.ref, main_sha, sha, main_sha=main_sha),
        secret=None,
        query=f"?secret={SECRET}",
    )
    assert status == 202 and body["jobs"][0]["num"] == pr.num, body
    stack.settle()
    [text] = stack.comments(repo_id, pr.num)
    assert ":white_check_mark: the change passes" in text
    assert "**6** rows scored" in text and "**0** flagged" in text
    assert "6 rows added to `data/extra.jsonl`, `data/train.jsonl`" in text
    assert "Flagged rows" not in text


def test_pull_request_without_a_baseline_on_main(stack):
    """No baseline in the repository: the threshold comes from a sample of main's rows; the PR's own baseline is
    not trusted."""
    repo_id = "alice/chats-nobaseline"
    stack.dataset(repo_id, baseline=False)
    pr = stack.hub.open_discussion(repo_id, "Add rows and a baseline", pull_request=True, author=PERSON)
    data = jsonl(ordinary_rows(24) + [compliance_row(1)] + ordinary_rows(1, start=24)).encode()
    push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": data, ".gradshield-baseline.json": stack.baseline})
    assert post(stack.url, pr_payload(repo_id, pr.num))[0] == 202
    stack.settle()
    [text] = stack.comments(repo_id, pr.num)
    assert ":x: the change fails" in text and "`data/train.jsonl:25`" in text
    assert "there is no baseline (`.gradshield-baseline.json`) there" in text
    assert "also changes `.gradshield-baseline.json`" in text
    assert not stack.hub.find("GET", rf"/datasets/{repo_id}/resolve/[^/]+/\.gradshield-baseline\.json$")


def test_pull_request_with_a_broken_row_is_told_where(stack):
    repo_id = "alice/chats-broken"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "Oops", pull_request=True, author=PERSON)
    data = jsonl(ordinary_rows(24)).encode() + b'{"messages": [\n'
    sha = push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": data})
    status, _ = post(stack.url, pr_payload(repo_id, pr.num, action="update"))
    assert status == 202
    stack.settle()
    [text] = stack.comments(repo_id, pr.num)
    assert "could not check this pull request" in text and "data/train.jsonl:25" in text
    assert "/tmp" not in text and "gradshield-pr-" not in text  # repository paths, not the download folder
    assert sha[:8] in text


def test_wrong_or_missing_secret_is_rejected_and_nothing_happens(stack):
    repo_id = "alice/chats-secret"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "Add rows", pull_request=True, author=PERSON)
    push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": jsonl([compliance_row(0)]).encode()})
    before = len(stack.hub.requests)
    for secret in ("wrong", SECRET[:-1], SECRET + "x", "", None):
        status, body = post(stack.url, pr_payload(repo_id, pr.num), secret=secret)
        assert status == 401, (secret, body)
    status, _ = post(stack.url, pr_payload(repo_id, pr.num), secret=None, query="?secret=wrong")
    assert status == 401
    stack.settle()
    assert len(stack.hub.requests) == before  # the app did not even ask the Hub
    assert stack.comments(repo_id, pr.num) == [] and stack.outcomes(repo_id) == []


def test_malformed_requests(stack):
    assert post(stack.url, None, raw=b"{not json")[0] == 400
    status, body = post(stack.url, {"event": {"action": "create"}, "repo": {"type": "dataset"}})
    assert status == 400 and "scope" in body["error"]
    payload = pr_payload("alice/x", 1)
    payload["webhook"]["version"] = 2
    assert post(stack.url, payload)[0] == 400
    assert post(stack.url, {}, path="/elsewhere")[0] == 404


@pytest.mark.parametrize(
    "payload, reason",
    [
        (pr_payload("alice/gpt-tiny", 4, repo_type="model"), "not a dataset repository"),
        (pr_payload("alice/space", 4, repo_type="space"), "not a dataset repository"),
        (pr_payload("alice/chats-x", 4, scope="discussion.comment"), "comments are not checked"),
        (pr_payload("alice/chats-x", 4, action="update", status="merged"), "is merged"),
        (content_payload("alice/chats-x", "refs/tags/v1", None, "a" * 40, main_sha="b" * 40), "no new commit"),
        (content_payload("alice/chats-x", "refs/heads/main", "a" * 40, None, main_sha="b" * 40), "no new commit"),
    ],
)
def test_events_ignored_from_the_payload(stack, payload, reason):
    """Model and Space repositories, comments, closed pull requests, tags: 200, and no call to the Hub."""
    before = len(stack.hub.requests)
    status, body = post(stack.url, payload)
    assert status == 200 and body["status"] == "ignored" and reason in body["reason"], body
    assert len(stack.hub.requests) == before


def test_push_to_main_updates_the_card_and_its_own_commit_is_ignored(stack):
    repo_id = "alice/chats-main"
    card = b"---\nlicense: mit\ntags:\n- chat # kept\n---\n# Chats\n\nHand-written text.\n"
    stack.dataset(repo_id, card=card)
    old = stack.hub.repo(repo_id).heads["main"]
    data = jsonl(ordinary_rows(24) + [compliance_row(0)] + ordinary_rows(2, start=24)).encode()
    sha = push_as(stack.hub, repo_id, "main", {"data/train.jsonl": data}, title="Add three rows")

    status, body = post(stack.url, content_payload(repo_id, "refs/heads/main", old, sha, main_sha=sha))
    assert status == 202 and body["jobs"] == [{"kind": "main", "repo": repo_id, "sha": sha, "branch": "main"}], body
    stack.settle()

    repo = stack.hub.repo(repo_id)
    ours = repo.commits[-1]
    assert ours["summary"].startswith(COMMIT_PREFIX) and ours["author"] == BOT_USER and ours["parent"] == sha
    assert sorted(ours["files"]) == ["README.md", "gradshield-scores.png"]
    new_card = repo.files()["README.md"].decode()
    assert new_card.startswith("---\nlicense: mit\ntags:\n- chat # kept\n")  # the person's YAML, comment included
    assert "# Chats\n\nHand-written text.\n" in new_card
    meta = DatasetCard(new_card).data.to_dict()["gradshield"]
    assert meta["rows_scored"] == 3 and meta["rows_flagged"] == 1 and meta["rows_total"] == 27
    assert f"`{_flagged_id()[:12]}`" in new_card and "`data/train.jsonl:25`" in new_card
    assert repo.files()["gradshield-scores.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert repo.files()["data/train.jsonl"] == data  # the data is untouched
    commit_req = stack.hub.find("POST", rf"^/api/datasets/{repo_id}/commit/main$")
    assert len(commit_req) == 1 and commit_req[0].ndjson()[0]["value"]["summary"].startswith(COMMIT_PREFIX)

    # The Hub now sends the event of that commit: the app recognises it as its own and does nothing.
    n_req, n_commits = len(stack.hub.requests), len(repo.commits)
    status, body = post(stack.url, content_payload(repo_id, "refs/heads/main", sha, ours["oid"], main_sha=ours["oid"]))
    assert status == 200 and body["status"] == "ignored" and "gradshield-lint's own" in body["reason"], body
    stack.settle()
    new_requests = stack.hub.requests[n_req:]
    assert [(r.method, r.path) for r in new_requests] == [("GET", f"/api/datasets/{repo_id}/commits/{ours['oid']}")]
    assert len(repo.commits) == n_commits


def test_events_of_the_bots_own_commits_and_pull_requests_are_ignored(stack, tmp_path):
    repo_id = "alice/chats-own"
    stack.dataset(repo_id)
    # A card pushed by gradshield-lint itself (the CLI's `card --push`), straight to main.
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\nA card\n")
    old = stack.hub.repo(repo_id).heads["main"]
    push_card(repo_id, card, None, create_pr=False, token=stack.hub.token, endpoint=stack.hub.url)
    new = stack.hub.repo(repo_id).heads["main"]
    status, body = post(stack.url, content_payload(repo_id, "refs/heads/main", old, new, main_sha=new))
    assert status == 200 and "gradshield-lint's own" in body["reason"], body

    # A pull request opened by the bot's user (known from whoami, title without the prefix): ignored too.
    pr = stack.hub.open_discussion(repo_id, "Add rows", pull_request=True, author=BOT_USER)
    status, body = post(stack.url, pr_payload(repo_id, pr.num))
    assert status == 200 and "opened by gradshield-lint" in body["reason"], body

    # A person's pull request whose latest commit was pushed by the bot's user: ignored.
    pr2 = stack.hub.open_discussion(repo_id, "Fix typos", pull_request=True, author=PERSON)
    sha = push_as(
        stack.hub,
        repo_id,
        pr2.ref,
        {"README.md": b"---\nlicense: mit\n---\nx\n"},
        author=BOT_USER,
        title="Fix the card",
    )
    status, body = post(stack.url, content_payload(repo_id, pr2.ref, None, sha, main_sha=new))
    assert status == 200 and "gradshield-lint's own" in body["reason"], body
    stack.settle()
    assert stack.outcomes(repo_id) == []
    assert stack.hub.find("POST", rf"^/api/datasets/{repo_id}/discussions/") == []


def test_pull_request_changing_no_dataset_file_gets_no_comment(stack):
    repo_id = "alice/chats-docs"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "Docs", pull_request=True, author=PERSON)
    push_as(stack.hub, repo_id, pr.ref, {"README.md": b"# Better docs\n"})
    assert post(stack.url, pr_payload(repo_id, pr.num))[0] == 202
    stack.settle()
    [outcome] = stack.outcomes(repo_id)
    assert outcome.status == "skipped" and "no dataset file" in outcome.detail
    assert stack.comments(repo_id, pr.num) == []


# ---------------------------------------------------------------------------------------------- units, no server


def test_settings_from_env():
    from gradshield_lint.errors import ConfigError
    from hooks.webhook_app import Settings

    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        Settings.from_env({})
    s = Settings.from_env(
        {
            "WEBHOOK_SECRET": "x",
            "HF_TOKEN": "hf_t",
            "HF_ENDPOINT": "http://127.0.0.1:9/",
            "GRADSHIELD_CONFIG": "/srv/gs.yaml",
            "GRADSHIELD_BOT_USER": "bot",
        }
    )
    assert (s.secret, s.token, s.endpoint, str(s.config_path), s.bot_user) == (
        "x",
        "hf_t",
        "http://127.0.0.1:9",
        "/srv/gs.yaml",
        "bot",
    )
    assert Settings.from_env({"WEBHOOK_SECRET": "x"}).endpoint == "https://huggingface.co"


def test_glob_matching_reads_globs_like_path_glob():
    from gradshield_lint.io.files import glob_regex
    from hooks.jobs import Layout

    assert glob_regex("**/*.jsonl").match("train.jsonl") and glob_regex("**/*.jsonl").match("a/b/train.jsonl")
    assert not glob_regex("*.jsonl").match("a/train.jsonl") and glob_regex("data/*.csv").match("data/x.csv")
    assert glob_regex("data/[!x]*.csv").match("data/a.csv") and not glob_regex("data/[!x]*.csv").match("data/x.csv")
    lay = Layout(("**/*.jsonl", "**/*.json"), ".gradshield-baseline.json")
    files = ["data/a.jsonl", ".gradshield-baseline.json", ".github/x.json", "README.md", "b.json", "c.txt"]
    assert lay.data_files(files) == ["b.json", "data/a.jsonl"]


def test_main_refuses_to_start_without_a_secret(monkeypatch, caplog):
    from hooks.webhook_app import main

    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    assert main(["--port", "0"]) == 2
    assert "WEBHOOK_SECRET is not set" in caplog.text


# ------------------------------------------------------------------------ issue 12: own events, limits, escaping


def test_a_title_prefix_does_not_make_an_event_the_bots_own(stack):
    """Anyone can start a title or a commit message with `gradshield-lint:`: a person's pull request titled so, and
    a person's push to main with such a message, are checked like any other (only the author, the bot's Hub user,
    marks an event as the app's own)."""
    repo_id = "alice/chats-forged"
    stack.dataset(repo_id)
    forged = f"{COMMIT_PREFIX} update the dataset card report"
    pr = stack.hub.open_discussion(repo_id, forged, pull_request=True, author=PERSON)
    data = jsonl(ordinary_rows(24) + [compliance_row(0)]).encode()
    sha = push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": data}, author=PERSON, title=forged)
    status, body = post(stack.url, pr_payload(repo_id, pr.num, title=forged))
    assert status == 202 and body["jobs"] == [{"kind": "pr", "repo": repo_id, "sha": sha, "num": pr.num}], body
    stack.settle()
    [text] = stack.comments(repo_id, pr.num)
    assert ":x: the change fails" in text and "`data/train.jsonl:25`" in text

    old = stack.hub.repo(repo_id).heads["main"]
    main_sha = push_as(stack.hub, repo_id, "main", {"data/train.jsonl": data}, author=PERSON, title=forged)
    status, body = post(stack.url, content_payload(repo_id, "refs/heads/main", old, main_sha, main_sha=main_sha))
    assert status == 202 and body["jobs"][0]["kind"] == "main", body
    stack.settle()
    assert {o.status for o in stack.outcomes(repo_id)} == {"commented", "card-updated"}


def test_no_event_is_checked_while_the_bots_user_is_unknown(stack):
    """When `whoami` fails (and GRADSHIELD_BOT_USER is unset) the app cannot tell its own card commits from others':
    it answers 503 and queues nothing, then, once `whoami` answers again, checks the replayed event."""
    repo_id = "alice/chats-whoami"
    stack.dataset(repo_id)
    pr = stack.hub.open_discussion(repo_id, "Add rows", pull_request=True, author=PERSON)
    push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": jsonl(ordinary_rows(25)).encode()})
    token = stack.hub.token
    stack.app.hub.bot_user = None
    stack.hub.token = "hf_another_token"  # the app's token is now refused: whoami-v2 answers 401
    try:
        status, body = post(stack.url, pr_payload(repo_id, pr.num))
        assert status == 503 and "GRADSHIELD_BOT_USER" in body["error"], body
        assert stack.app.hub.bot_user is None and stack.outcomes(repo_id) == []
    finally:
        stack.hub.token = token
    status, body = post(stack.url, pr_payload(repo_id, pr.num))  # the Hub's "replay"
    assert status == 202 and stack.app.hub.bot_user == BOT_USER, body
    stack.settle()


def _head(
    secret: str | None, *, length: str | None = None, chunked: bool = False, extra: tuple[str, ...] = ()
) -> bytes:
    lines = ["POST /webhook HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if secret is not None:
        lines.append(f"X-Webhook-Secret: {secret}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def _connect(stack) -> socket.socket:
    host, port = stack.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes] | None:
    """The status, headers and body the server has answered within `timeout` s (None: no answer yet). Reads at
    most 64 KiB."""
    data, deadline = b"", time.monotonic() + timeout
    while b"\r\n\r\n" not in data and len(data) < 65536:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return None
        try:
            chunk = sock.recv(65536)
        except ConnectionError:
            break
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return None
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, rest


def _send_until_closed(sock: socket.socket, total: int, piece: bytes) -> int:
    """Send up to `total` bytes of `piece`s; the number sent before the server closed the connection."""
    sent = 0
    sock.settimeout(10)
    try:
        while sent < total:
            sock.sendall(piece)
            sent += len(piece)
    except (ConnectionError, TimeoutError):
        pass
    return sent


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_a_body_without_the_secret_is_refused_before_it_is_read(stack, secret):
    """Without the right secret the server answers 401 before the client has sent the body, and closes the
    connection: the 256 MiB it announces (or a chunked body without end) is never read or held."""
    from hooks.webhook_app import MAX_BODY

    piece = b"x" * 65536
    # A body within the bound: 401 as soon as the headers are in (not a byte of the body sent).
    with _connect(stack) as sock:
        sock.sendall(_head(secret, length=str(MAX_BODY // 2)))
        answer = _answer(sock)
        assert answer is not None and answer[0] == 401, answer
        assert answer[1].get("connection") == "close"
    # 256 MiB announced: 401 after 64 KiB sent, then the connection is closed long before the rest is sent.
    with _connect(stack) as sock:
        sock.sendall(_head(secret, length=str(256 * 1024 * 1024)) + piece)
        answer = _answer(sock)
        assert answer is not None and answer[0] == 401, answer
        sent = _send_until_closed(sock, 256 * 1024 * 1024, piece)
        assert sent < 64 * 1024 * 1024, f"the server kept reading: {sent} bytes accepted after its answer"
    # A chunked body: 401 after its first chunk.
    with _connect(stack) as sock:
        sock.sendall(_head(secret, chunked=True) + b"%x\r\n%s\r\n" % (len(piece), piece))
        answer = _answer(sock)
        assert answer is not None and answer[0] == 401, answer


@pytest.mark.parametrize("length", ["-1", "1e9", "0x10", "12, 13"])
def test_an_invalid_content_length_is_refused_at_once(stack, length):
    """`Content-Length: -1` (which the old server read as "read to EOF") and other invalid lengths: 400 while the
    connection is still open, with or without the secret; nothing reaches the Hub."""
    before = len(stack.hub.requests)
    for secret in (SECRET, None):
        with _connect(stack) as sock:
            sock.sendall(_head(secret, length=length) + b'{"event": ')
            answer = _answer(sock)
            assert answer is not None and answer[0] == 400, (length, secret, answer)
    assert len(stack.hub.requests) == before


def test_a_body_over_the_bound_is_refused_with_413(stack):
    """With the right secret: a declared length over the bound is refused before the body is sent; a chunked body
    is read only up to the bound, then refused and the connection closed; a body with no length at all is 411."""
    from hooks.webhook_app import MAX_BODY

    before = len(stack.hub.requests)
    with _connect(stack) as sock:
        sock.sendall(_head(SECRET, length=str(MAX_BODY + 1)))
        answer = _answer(sock)
        assert answer is not None and answer[0] == 413, answer
    piece = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with _connect(stack) as sock:
        sock.sendall(_head(SECRET, chunked=True))
        sent, answer = 0, None
        while answer is None and sent < 16 * MAX_BODY:
            sock.sendall(chunk)
            sent += len(piece)
            answer = _answer(sock, timeout=0.01)
        answer = answer or _answer(sock)
        assert answer is not None and answer[0] == 413, answer
        assert sent < 16 * MAX_BODY
        assert _send_until_closed(sock, 256 * 1024 * 1024, chunk) < 64 * 1024 * 1024
    with _connect(stack) as sock:
        sock.sendall(_head(SECRET))
        answer = _answer(sock)
        assert answer is not None and answer[0] == 411, answer
    # JSON nested 100,000 deep (100 kB, within the bound): a 400, not a crash.
    status, body = post(stack.url, None, raw=b"[" * 100_000)
    assert status == 400 and "not JSON" in body["error"], body
    assert len(stack.hub.requests) == before


@pytest.mark.parametrize(
    "name",
    [
        "a/b/../../x",
        "alice/..",
        "../alice",
        "alice/chats/../../../etc",
        "alice/a b",
        "alice/chats?x=1",
        "alice",
        "",
        "alice/" + "x" * 100,
    ],
)
def test_a_repository_name_that_is_not_a_repo_id_is_refused(stack, name):
    """`repo.name` goes into Hub URLs: anything that is not a Hub repository id (`owner/name`) is a 400, and the app
    does not call the Hub."""
    before = len(stack.hub.requests)
    for payload in (
        pr_payload(name, 3),
        content_payload(name, "refs/heads/main", "a" * 40, "b" * 40, main_sha="b" * 40),
    ):
        status, body = post(stack.url, payload)
        assert status == 400 and "repo" in body["error"], (name, body)
    assert len(stack.hub.requests) == before


def test_a_revision_that_is_not_a_commit_id_is_refused(stack):
    before = len(stack.hub.requests)
    for sha in ("../../main", "main", "A" * 40, "a" * 39):
        status, body = post(stack.url, content_payload("alice/chats", "refs/heads/main", None, sha, main_sha="b" * 40))
        assert status == 400 and "newSha" in body["error"], (sha, body)
    assert len(stack.hub.requests) == before


def _render(markdown: str) -> str:
    """The comment as HTML, by a CommonMark renderer with GFM tables and raw HTML allowed (as on the Hub)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def _code_texts(rendered: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r"<code[^>]*>(.*?)</code>", rendered, flags=re.DOTALL)]


def test_hostile_file_names_and_rows_cannot_leave_their_markup(stack):
    """A pull request adds a file whose name is full of backticks and HTML, and a flagged row whose reply carries
    HTML, a mention and a table bar. In the rendered comment the name is one piece of code, exactly as it is, and
    no HTML from the pull request becomes an element; the same for the comment on a file that cannot be read."""
    repo_id = "alice/chats-hostile"
    stack.dataset(repo_id)
    evil = "data/a`` `b</sub><img src=x onerror=alert(1)>.jsonl"
    row = compliance_row(2)
    row["messages"][1]["content"] += " <b>@bob</b>|`x`"
    pr = stack.hub.open_discussion(repo_id, "Add rows", pull_request=True, author=PERSON)
    push_as(stack.hub, repo_id, pr.ref, {evil: jsonl([row] + ordinary_rows(2, start=60)).encode()})
    assert post(stack.url, pr_payload(repo_id, pr.num))[0] == 202
    stack.settle()
    [text] = stack.comments(repo_id, pr.num)
    rendered = _render(text)
    assert "<img" not in rendered and "<b>" not in rendered, rendered
    assert evil in _code_texts(rendered)  # the list of changed files: the exact name, in one code span
    assert rendered.count("</sub>") == text.count("<sub>")  # only the app's own <sub> closes
    assert ":x: the change fails" in text
    [table] = re.findall(r"<table>.*?</table>", rendered, flags=re.DOTALL)
    assert "&lt;b&gt;@bob&lt;/b&gt;|`x`" in table  # the excerpt: shown as text, in its cell

    # A file that cannot be read: the error message names it inside a code block that the name cannot close.
    broken = "data/c\n````\n# Heading <img src=y>.jsonl"  # a line of four backticks: it would close a ```` fence
    pr2 = stack.hub.open_discussion(repo_id, "More rows", pull_request=True, author=PERSON)
    push_as(stack.hub, repo_id, pr2.ref, {broken: b'{"messages": [\n'})
    assert post(stack.url, pr_payload(repo_id, pr2.num))[0] == 202
    stack.settle()
    [text2] = stack.comments(repo_id, pr2.num)
    rendered2 = _render(text2)
    assert "could not check this pull request" in text2 and "<img" not in rendered2, rendered2
    assert rendered2.count("<pre>") == 1 and any(broken in c for c in _code_texts(rendered2)), rendered2


def test_code_spans_and_blocks_hold_any_text():
    from hooks.jobs import code_block, code_span

    for text in ("plain", "a`b", "``x``", "`", "` x `", "trail`", "a ``` b ```` c", "x</sub><img src=1>|@y"):
        rendered = _render(code_span(text))
        assert _code_texts(rendered) == [text], (text, code_span(text), rendered)
    for text in ("```\n# x\n```", "a\n````\nb", "<script>x</script>"):
        rendered = _render(code_block(text) + "\n\nafter")
        assert rendered.count("<pre>") == 1 and "<p>after</p>" in rendered and "<script>" not in rendered, rendered
        assert html.unescape(re.search(r"<code[^>]*>(.*?)</code>", rendered, re.DOTALL).group(1)) == text + "\n"


# ---------------------------------------------------------------- issue 33: stalled request heads, a bounded queue


def _read_to_close(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """What the server sends until it closes the connection, and when it closed it (None: still open after
    `timeout` s). Reads at most 64 KiB."""
    data, deadline = b"", time.monotonic() + timeout
    while len(data) < 65536:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return data, None
        try:
            chunk = sock.recv(65536)
        except ConnectionError:
            chunk = b""
        if not chunk:
            return data, time.monotonic()
        data += chunk
    return data, None


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/", timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_stalled_request_heads_are_closed_and_free_the_server(stack):
    """33 connections that send a request line and stop (one of them trickling a byte every 0.1 s) take every
    place of uvicorn's `limit_concurrency` (32): the server answers 503 to everyone. uvicorn has no timeout for a
    request head; the app's protocol (`hooks.protocol`) closes each one `head_timeout` after it began, with a 408,
    however many bytes it trickles, and the server answers again. Heads that arrive in pieces within the deadline,
    and a second request on a kept-alive connection, are served as before; a stalled second request is closed."""
    timeout = 1.0
    with serve(stack.app, lifespan="off", head_timeout=timeout) as url:
        host, port = url.removeprefix("http://").split(":")
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(33)]
        try:
            started = time.monotonic()
            for sock in socks:
                sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _get_status(url) == 503  # every place is taken
            trickle, closed_at = socks[0], None
            while closed_at is None and time.monotonic() < started + 10 * timeout:
                try:
                    trickle.sendall(b"x")
                except ConnectionError:
                    break
                answer, closed_at = _read_to_close(trickle, 0.1)
            assert closed_at is not None, "a connection trickling its headers was never closed"
            assert timeout * 0.9 <= closed_at - started <= timeout + 2, closed_at - started
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            for sock in socks[1:]:
                answer, when = _read_to_close(sock, timeout + 5)
                assert when is not None, "a stalled connection was never closed"
                assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower(), answer
            assert _get_status(url) == 200  # the places are free again
        finally:
            for sock in socks:
                sock.close()

        # A head in three pieces, all within the deadline: served.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for piece in (b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
                sock.sendall(piece)
                time.sleep(timeout / 5)
            answer = _answer(sock)
            assert answer is not None and answer[0] == 200, answer
            # The same connection, kept alive: a second request that stops half-way is closed like the first kind.
            _read_to_close(sock, 0.05)  # the rest of the first answer's body
            sent = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost")
            answer2, when = _read_to_close(sock, timeout + 5)
            assert when is not None and when - sent <= timeout + 2, "a stalled second request was never closed"
            assert answer2.startswith(b"HTTP/1.1 408 "), answer2


class _HeldApp:
    """Builds a second webhook app on the module's fake Hub, model and configuration, whose jobs wait for
    `release` before they run (the real job then runs): the worker stays busy while a test fills the queue."""

    @staticmethod
    def build(stack, **settings):
        from hooks.webhook_app import Settings, WebhookApp

        class Held(WebhookApp):
            release = threading.Event()
            started = threading.Semaphore(0)

            def _run_job(self, job):
                self.started.release()
                assert self.release.wait(120), "the test never released the job"
                return super()._run_job(job)

        base = Settings(secret=SECRET, token=stack.hub.token, endpoint=stack.hub.url, bot_user=BOT_USER)
        return Held(dataclasses.replace(base, **settings), config=stack.app.config, engine=stack.app.engine)


def test_a_full_job_queue_answers_503_with_retry_after_and_a_checked_commit_can_be_queued_again(stack):
    """With two places in the queue: two pull requests are queued (the first one running), a third gets 503 with
    Retry-After, and nothing is kept of it; a repeat of a pending event is ignored as already queued. Once the
    worker is free the third is queued; a repeat right after its job is ignored as already checked (the Hub sends
    two events for a new pull request), and after `done_ttl` the same commit is checked again (a replay)."""
    app = _HeldApp.build(stack, max_queued=2, done_ttl=2.0)
    repo_id = "alice/chats-busy"
    stack.dataset(repo_id)
    prs = []
    for i in range(3):
        pr = stack.hub.open_discussion(repo_id, f"Add rows {i}", pull_request=True, author=PERSON)
        push_as(stack.hub, repo_id, pr.ref, {"data/train.jsonl": jsonl(ordinary_rows(25 + i)).encode()})
        prs.append(pr)
    with serve(app) as url:
        assert app.runner.ready.wait(120)
        status, body = post(url, pr_payload(repo_id, prs[0].num))
        assert status == 202, body
        assert app.started.acquire(timeout=30)  # the first job runs (and waits): one place left
        assert post(url, pr_payload(repo_id, prs[1].num))[0] == 202
        status, body = post(url, pr_payload(repo_id, prs[1].num))
        assert status == 200 and "already queued" in body["reason"], body
        req = urllib.request.Request(
            url + "/webhook",
            data=json.dumps(pr_payload(repo_id, prs[2].num)).encode(),
            headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "60"
        assert "retry later" in json.loads(refused.value.read())["error"]
        app.release.set()
        assert app.wait_idle(300)
        status, body = post(url, pr_payload(repo_id, prs[2].num))  # the Hub's retry
        assert status == 202, body
        assert app.wait_idle(300)
        done = time.monotonic()
        status, body = post(url, pr_payload(repo_id, prs[2].num))
        assert status == 200 and "already checked" in body["reason"], body
        time.sleep(max(0.0, done + 2.1 - time.monotonic()))
        status, body = post(url, pr_payload(repo_id, prs[2].num))  # a replay later: checked again
        assert status == 202, body
        assert app.wait_idle(300)
    assert [len(stack.comments(repo_id, pr.num)) for pr in prs] == [1, 1, 2], [
        (o.job, o.status, o.detail) for o in app.history
    ]
    assert [o.status for o in app.history] == ["commented"] * 4


def test_job_keys_pending_are_never_forgotten_and_done_ones_expire():
    """The runner's bookkeeping without a server: a pending key stays until its job ends, however many other
    commits are queued meanwhile (the old bound of 5000 keys forgot the oldest, pending or not: the same commit
    was then queued twice); a failed job's key goes at once; a done one after `done_ttl`; beyond `max_queued`
    pending jobs, `QueueFull`."""
    from hooks.jobs import Outcome
    from hooks.payload import MainJob
    from hooks.webhook_app import DONE_KEYS, JobRunner, QueueFull

    gate, running = threading.Event(), threading.Event()

    def run(job):
        if job.sha == "0" * 40:
            running.set()
            assert gate.wait(60)
        if job.sha == "f" * 40:
            raise RuntimeError("the Hub is down")
        return Outcome(job, "skipped", "done")

    runner = JobRunner(run, max_queued=DONE_KEYS + 10, done_ttl=0.5)
    runner.start()
    try:
        held = MainJob("alice/x", "0" * 40)
        assert runner.submit(held) and running.wait(30)
        others = [MainJob("alice/x", f"{i + 1:040x}") for i in range(DONE_KEYS + 5)]
        assert all(runner.submit(job) for job in others)
        assert runner.seen(held) == "queued" and not runner.submit(held)
        gate.set()
        assert runner.wait_idle(60)
        assert runner.seen(others[-1]) == "checked" and not runner.submit(others[-1])
        failing = MainJob("alice/x", "f" * 40)
        assert runner.submit(failing) and runner.wait_idle(60)
        assert runner.seen(failing) is None and runner.submit(failing)  # replayed at once
        assert runner.wait_idle(60)
        time.sleep(0.6)
        assert runner.seen(others[-1]) is None and runner.submit(others[-1])  # done_ttl later: queued again
        assert runner.wait_idle(60)
    finally:
        runner.stop()
    small = JobRunner(run, max_queued=1)  # not started: its one job stays pending
    assert small.submit(MainJob("alice/x", "1" * 40))
    with pytest.raises(QueueFull):
        small.submit(MainJob("alice/x", "2" * 40))


def test_the_access_log_never_shows_the_secret_from_the_query(stack):
    """`?secret=` (which the Hub allows in the target URL) is redacted in uvicorn's access log, the right secret
    and a wrong one alike, as uvicorn's own access formatter writes the line; the request still works."""
    import logging

    from uvicorn.logging import AccessFormatter

    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    access = logging.getLogger("uvicorn.access")
    capture = Capture(level=logging.INFO)
    capture.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    with serve(stack.app, lifespan="off", log_level="info") as url:
        access.addHandler(capture)
        try:
            status, body = post(
                url,
                content_payload("alice/x", "refs/heads/dev", None, None, main_sha="0" * 40),
                secret=None,
                query=f"?secret={SECRET}&x=1",
            )
            assert status == 200 and body["status"] == "ignored", body  # the query secret is accepted
            guess = "my-secret-guess"
            assert post(url, {}, secret=None, query=f"?secret={guess}")[0] == 401
            deadline = time.monotonic() + 10
            while len(lines) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            access.removeHandler(capture)
            access.setLevel(logging.WARNING)
    assert len(lines) == 2, lines
    assert '"POST /webhook?secret=***&x=*** HTTP/1.1" 200' in lines[0], lines
    assert '"POST /webhook?secret=*** HTTP/1.1" 401' in lines[1], lines
    assert not any(SECRET in line or guess in line for line in lines), lines


def test_redact_query():
    from hooks.accesslog import redact_query

    assert redact_query("/webhook") == "/webhook"
    assert redact_query("/webhook?secret=a%20b&secret=c") == "/webhook?secret=***&secret=***"
    assert redact_query("/?%73ecret=x&&hunter2") == "/?%73ecret=***&&***"
