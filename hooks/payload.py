"""Hub webhook payloads: parsing and triage, without network or model.

The payload is the Hub's webhook format version 3, read with `huggingface_hub`'s own pydantic models
(`huggingface_hub.WebhookPayload` and the `WebhookPayload*` models it is made of): they check the shape, the types
and the version (`webhook.version` must be 3).

What those models do not check, and this module does, because the values go into Hub URLs and comments:

- `repo.name` must be a repository id the Hub can hold (`huggingface_hub.utils.validate_repo_id`: `owner/name`,
  letters, digits, `-`, `_`, `.`, no `..`), so `a/b/../../x` never reaches a URL;
- every `updatedRefs[].newSha`/`oldSha` must be a git commit id (40 hex digits), because the app asks the Hub
  for files at that revision;
- `discussion.num` must be positive.

The models also leave out `repo.headSha` (they name the field `head_sha`, which the Hub does not send); the app
does not need it: the commit to check comes from `updatedRefs` or from the Hub.

Authors in payloads are opaque ids, not user names, so whether an event is the bot's own is decided later, with a
Hub call that names the author (`hooks.jobs.resolve`). A title or commit message is never trusted for that: anyone
can write any title.

`triage(payload)` returns the jobs an event asks for (a pull request to check, `main` to re-report) or the reason
it is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import WebhookPayload
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from pydantic import ValidationError

DEFAULT_BRANCH = "main"
OPEN_STATUSES = ("open", "draft")
_PR_REF = re.compile(r"^refs/pr/(\d+)$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


class PayloadError(ValueError):
    """A request body that is not a Hub webhook payload (answered 400)."""


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


def _describe(exc: ValidationError, limit: int = 3) -> str:
    """pydantic's errors as one short line: `event.scope: Field required; ...` (no input values echoed)."""
    parts = []
    for e in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "payload"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check_repo_id(repo_id: str) -> str:
    """`repo_id` when it is a repository id the Hub can hold (`owner/name`); `PayloadError` otherwise."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PayloadError(f"`repo.name` is not a repository id: {exc}") from None
    if "/" not in repo_id:  # every dataset repository on the Hub lives under an owner
        raise PayloadError(f"`repo.name` is not a repository id of the form owner/name: {repo_id!r}")
    return repo_id


def parse_event(data: Any) -> WebhookPayload:
    """The validated payload; `PayloadError` when it is not a version-3 Hub payload or names an unsafe repository or
    revision."""
    if not isinstance(data, dict):
        raise PayloadError("the payload must be a JSON object")
    try:
        payload = WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(_describe(exc)) from None
    check_repo_id(payload.repo.name)
    if payload.discussion is not None and payload.discussion.num < 1:
        raise PayloadError("`discussion.num` must be a positive integer")
    for i, r in enumerate(payload.updatedRefs or ()):
        for name, sha in (("oldSha", r.oldSha), ("newSha", r.newSha)):
            if sha is not None and not _SHA.match(sha):
                raise PayloadError(f"`updatedRefs[{i}].{name}` is not a commit id (40 hex digits)")
    return payload


# ----------------------------------------------------------------------------------------------------------- triage


def branch_of(ref: str | None) -> str | None:
    """`refs/heads/main` -> `main`; None stays None."""
    if ref is None:
        return None
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref


def triage(payload: WebhookPayload, *, branch: str = DEFAULT_BRANCH) -> Triage:
    """What an event asks for, from the payload alone. Jobs still go through `hooks.jobs.resolve` (Hub lookups:
    is it the bot's own, is the pull request still open) before they are queued."""
    repo_type, repo_name = payload.repo.type, payload.repo.name
    if repo_type != "dataset":
        return Triage(ignored=f"not a dataset repository ({repo_type} {repo_name})")
    scope, action = payload.event.scope, payload.event.action
    if scope == "discussion.comment" or scope.startswith("discussion.comment."):
        return Triage(ignored="comments are not checked")
    if scope == "discussion" or scope.startswith("discussion."):
        d = payload.discussion
        if d is None:
            return Triage(ignored="a discussion event without a discussion")
        if not d.isPullRequest:
            return Triage(ignored=f"discussion #{d.num} is not a pull request")
        if action not in ("create", "update"):
            return Triage(ignored=f"pull request #{d.num}: action {action!r} needs no check")
        if d.status not in OPEN_STATUSES:
            return Triage(ignored=f"pull request #{d.num} is {d.status}")
        base = branch_of(d.changes.base) if d.changes is not None else None
        if base is not None and base != branch:
            return Triage(ignored=f"pull request #{d.num} merges into {base!r}, not {branch!r}")
        return Triage(jobs=(PullRequestJob(repo_name, d.num, None, base),))
    if scope == "repo.content" or scope.startswith("repo.content."):
        jobs: list[Job] = []
        refs = payload.updatedRefs or []
        for r in refs:
            if r.newSha is None:  # a deleted ref
                continue
            m = _PR_REF.match(r.ref)
            if m:
                jobs.append(PullRequestJob(repo_name, int(m.group(1)), r.newSha, None))
            elif r.ref == f"refs/heads/{branch}":
                jobs.append(MainJob(repo_name, r.newSha, branch))
        if not jobs:
            names = ", ".join(repr(r.ref) for r in refs) or "none"
            return Triage(ignored=f"no new commit on {branch!r} or on a pull request (updated refs: {names})")
        return Triage(jobs=tuple(jobs))
    return Triage(ignored=f"scope {scope!r} needs no check")
