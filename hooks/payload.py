"""Hub webhook payloads: parsing and triage, without network or model.

The payload is the Hub's webhook format version 3 (the shape of `huggingface_hub.WebhookPayload`, which needs
pydantic; this module reads the same JSON with plain dicts so that pydantic is not a dependency):

    {"event": {"action": "create"|"update"|"delete"|"move", "scope": "discussion"|"discussion.comment"|"repo"|
               "repo.content"|"repo.config"|...},
     "repo": {"type": "dataset"|"model"|"space", "name": "owner/name", "id": ..., "private": ..., "headSha": ...,
              "url": {"web": ..., "api": ...}, "owner": {"id": ...}},
     "discussion": {"num": 3, "isPullRequest": true, "status": "open", "title": ..., "author": {"id": ...},
                    "changes": {"base": "refs/heads/main"}, ...},          # community events only
     "comment": {"content": ..., "author": {"id": ...}, ...},             # comment events
     "updatedRefs": [{"ref": "refs/heads/main"|"refs/pr/3"|..., "oldSha": ..., "newSha": ...}],  # repo.content
     "webhook": {"id": ..., "version": 3}}

Authors in payloads are opaque ids, not user names, so whether an event was caused by the bot's own commit is
decided later with a Hub call (`hooks.jobs.own_event`); here only what the payload itself shows is used (a
discussion title or comment that starts with `COMMIT_PREFIX`).

`triage(event)` returns the jobs an event asks for (a pull request to check, `main` to re-report) or the reason
it is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gradshield_lint.hub import COMMIT_PREFIX

DEFAULT_BRANCH = "main"
SUPPORTED_VERSION = 3
OPEN_STATUSES = ("open", "draft")
_PR_REF = re.compile(r"^refs/pr/(\d+)$")


class PayloadError(ValueError):
    """A request body that is not a Hub webhook payload (answered 400)."""


@dataclass(frozen=True)
class UpdatedRef:
    ref: str
    old_sha: str | None
    new_sha: str | None


@dataclass(frozen=True)
class DiscussionInfo:
    num: int
    is_pull_request: bool
    status: str
    title: str
    base: str | None  # "refs/heads/main" for a pull request into main
    author_id: str | None


@dataclass(frozen=True)
class Event:
    action: str
    scope: str
    repo_type: str
    repo_name: str
    head_sha: str | None
    discussion: DiscussionInfo | None = None
    comment_content: str | None = None
    updated_refs: tuple[UpdatedRef, ...] = ()
    webhook_id: str | None = None


@dataclass(frozen=True)
class PullRequestJob:
    """Check the rows pull request `num` adds. `sha`: the commit to check (None: the PR's head when looked up);
    `base`: the branch it merges into (None: as the Hub's discussion details say)."""

    repo_id: str
    num: int
    sha: str | None = None
    base: str | None = None
    kind: str = field(default="pr", init=False)


@dataclass(frozen=True)
class MainJob:
    """Re-check `main` at commit `sha` and update the dataset card."""

    repo_id: str
    sha: str | None
    branch: str = DEFAULT_BRANCH
    kind: str = field(default="main", init=False)


Job = PullRequestJob | MainJob


@dataclass(frozen=True)
class Triage:
    jobs: tuple[Job, ...] = ()
    ignored: str | None = None  # why nothing is done


# ---------------------------------------------------------------------------------------------------------- parsing


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"`{what}` must be an object")
    return value


def _str(d: dict[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    value = d.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise PayloadError(f"`{what}.{key}` must be a non-empty string")
    return value


def parse_event(data: Any) -> Event:
    """The parts of a webhook payload the app uses; `PayloadError` when it is not a version-3 Hub payload."""
    data = _obj(data, "payload")
    webhook = data.get("webhook")
    webhook_id = None
    if webhook is not None:
        webhook = _obj(webhook, "webhook")
        version = webhook.get("version")
        if version is not None and version != SUPPORTED_VERSION:
            raise PayloadError(f"unsupported webhook version {version!r} (this app reads version {SUPPORTED_VERSION})")
        webhook_id = webhook.get("id") if isinstance(webhook.get("id"), str) else None
    event = _obj(data.get("event"), "event")
    repo = _obj(data.get("repo"), "repo")
    action = _str(event, "action", "event")
    scope = _str(event, "scope", "event")
    repo_type = _str(repo, "type", "repo")
    repo_name = _str(repo, "name", "repo")
    head_sha = repo.get("headSha") if isinstance(repo.get("headSha"), str) else None

    discussion = None
    if data.get("discussion") is not None:
        d = _obj(data["discussion"], "discussion")
        num = d.get("num")
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise PayloadError("`discussion.num` must be a positive integer")
        changes = d.get("changes") if isinstance(d.get("changes"), dict) else {}
        author = d.get("author") if isinstance(d.get("author"), dict) else {}
        discussion = DiscussionInfo(
            num=num,
            is_pull_request=d.get("isPullRequest") is True,
            status=str(d.get("status") or "open"),
            title=str(d.get("title") or ""),
            base=changes.get("base") if isinstance(changes.get("base"), str) else None,
            author_id=author.get("id") if isinstance(author.get("id"), str) else None,
        )
    comment_content = None
    if isinstance(data.get("comment"), dict) and isinstance(data["comment"].get("content"), str):
        comment_content = data["comment"]["content"]

    refs: list[UpdatedRef] = []
    if data.get("updatedRefs") is not None:
        if not isinstance(data["updatedRefs"], list):
            raise PayloadError("`updatedRefs` must be a list")
        for i, r in enumerate(data["updatedRefs"]):
            r = _obj(r, f"updatedRefs[{i}]")
            ref = _str(r, "ref", f"updatedRefs[{i}]")
            old = r.get("oldSha") if isinstance(r.get("oldSha"), str) else None
            new = r.get("newSha") if isinstance(r.get("newSha"), str) else None
            refs.append(UpdatedRef(ref, old, new))  # type: ignore[arg-type]
    return Event(action, scope, repo_type, repo_name, head_sha, discussion, comment_content, tuple(refs),  # type: ignore[arg-type]
                 webhook_id)


# ----------------------------------------------------------------------------------------------------------- triage


def branch_of(ref: str | None) -> str | None:
    """`refs/heads/main` -> `main`; None stays None."""
    if ref is None:
        return None
    return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref


def triage(event: Event, *, branch: str = DEFAULT_BRANCH) -> Triage:
    """What an event asks for, from the payload alone. Jobs still go through `hooks.jobs.own_event` (Hub lookups)
    before they are queued."""
    if event.repo_type != "dataset":
        return Triage(ignored=f"not a dataset repository ({event.repo_type} {event.repo_name})")
    scope = event.scope
    if scope == "discussion.comment" or scope.startswith("discussion.comment."):
        return Triage(ignored="comments are not checked")
    if scope == "discussion" or scope.startswith("discussion."):
        d = event.discussion
        if d is None:
            return Triage(ignored="a discussion event without a discussion")
        if not d.is_pull_request:
            return Triage(ignored=f"discussion #{d.num} is not a pull request")
        if event.action not in ("create", "update"):
            return Triage(ignored=f"pull request #{d.num}: action {event.action!r} needs no check")
        if d.status not in OPEN_STATUSES:
            return Triage(ignored=f"pull request #{d.num} is {d.status}")
        if d.title.startswith(COMMIT_PREFIX):
            return Triage(ignored=f"pull request #{d.num} was opened by gradshield-lint")
        base = branch_of(d.base)
        if base is not None and base != branch:
            return Triage(ignored=f"pull request #{d.num} merges into {base!r}, not {branch!r}")
        return Triage(jobs=(PullRequestJob(event.repo_name, d.num, None, base),))
    if scope == "repo.content" or scope.startswith("repo.content."):
        jobs: list[Job] = []
        for r in event.updated_refs:
            if r.new_sha is None:  # a deleted ref
                continue
            m = _PR_REF.match(r.ref)
            if m:
                jobs.append(PullRequestJob(event.repo_name, int(m.group(1)), r.new_sha, None))
            elif r.ref == f"refs/heads/{branch}":
                jobs.append(MainJob(event.repo_name, r.new_sha, branch))
        if not jobs:
            refs = ", ".join(r.ref for r in event.updated_refs) or "none"
            return Triage(ignored=f"no new commit on {branch!r} or on a pull request (updated refs: {refs})")
        return Triage(jobs=tuple(jobs))
    return Triage(ignored=f"scope {scope!r} needs no check")
