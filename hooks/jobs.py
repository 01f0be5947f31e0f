"""What the webhook app does on the Hub: decide whether an event is its own, check a pull request, update the card.

Every network call goes through `huggingface_hub` (an `HfApi` bound to the configured endpoint and token):

- own-event checks (answered before the webhook request returns): `get_discussion_details` for a pull request
  (its author, title and latest commit), `repo_info(revision="refs/pr/N")` for the commit to check when the event
  does not name it, and one page of `GET /api/datasets/{repo}/commits/{sha}` (what `list_repo_commits` reads,
  without following every page) for a push to main;
- a pull request: `list_repo_tree(recursive=True)` at the pull request's commit and on main (blob ids tell which
  dataset files the pull request changes, so only those are downloaded), `hf_hub_download` of the changed files
  at both revisions and of the baseline on main, then `comment_discussion` (`gradshield_lint.hub.post_discussion_comment`);
- main: `list_repo_tree`, `hf_hub_download` of the dataset files, the baseline and README.md, `repo_info` to make
  sure main has not moved meanwhile, then `create_commit` (`gradshield_lint.hub.push_card`) as the bot's user, so
  that the event of that commit is recognised by its author and ignored (its message starts with `COMMIT_PREFIX`
  for people reading the history; the prefix itself proves nothing, anyone can write it).

Rows are judged by the linter service (`gradshield_lint.lint.service.Linter`), the one the CLI calls: on main
`Linter.check` against the baseline (or `Linter.scan` without one); for a pull request, `Linter.judge_rows` on the
rows it *adds* (rows of its changed files that the same files on main do not hold) that the baseline on main does
not know, judged against that baseline's threshold (without one: a threshold found on a sample of main's rows,
exactly as `check --diff-base` finds it). The baseline is always main's: a pull request that edits the baseline
cannot vouch for its own rows. Which files are data is decided by the configuration's `files` globs, read by the
CLI's own matcher (`gradshield_lint.io.files`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gradshield_lint.config import Config
from gradshield_lint.errors import ConfigError, GradshieldError
from gradshield_lint.fmt import plural
from gradshield_lint.hub import (
    CARD_NAME,
    COMMIT_PREFIX,
    comment_text,
    post_discussion_comment,
    push_card,
    write_card_report,
)
from gradshield_lint.io.files import matches
from gradshield_lint.io.rows import Row, RowShape, is_dataset_file, iter_rows
from gradshield_lint.lint.findings import LintResult
from gradshield_lint.lint.service import Linter, load_checked_baseline
from gradshield_lint.report import code_span

from .payload import DEFAULT_BRANCH, OPEN_STATUSES, Job, MainJob, PullRequestJob, branch_of

if TYPE_CHECKING:
    from gradshield_lint.scoring.engine import Engine

log = logging.getLogger("gradshield.webhook")

COMMENT_MARKER = "<!-- gradshield-lint:webhook -->"


class Ignored(Exception):
    """The job turned out to need nothing (the bot's own event, a closed pull request, ...)."""


@dataclass(frozen=True)
class Outcome:
    """What one job did. `status`: commented, card-updated, skipped, failed."""

    job: Job
    status: str
    detail: str
    url: str | None = None
    result: LintResult | None = None


@dataclass
class HubTarget:
    """Where and as whom the app talks to the Hub."""

    endpoint: str
    token: str | None
    bot_user: str | None = None

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)


# ------------------------------------------------------------------------------------------------------ own events


def _is_own(authors: Iterable[str | None], bot_user: str | None) -> bool:
    """Whether the bot's user is among `authors` (Hub user names, which the Hub sets from who is logged in).

    Only the author counts: a title or commit message that starts with `COMMIT_PREFIX` can be written by anyone,
    so it proves nothing. `bot_user` None (not known) is a bug in the caller: it must find out first."""
    if not bot_user:
        raise RuntimeError("the bot's user name is not known; cannot tell its own events from others'")
    return bot_user in {a for a in authors if a}


def head_commit(hub: HubTarget, repo_id: str, revision: str) -> dict[str, Any]:
    """The commit `revision` points at, as the Hub's commits listing gives it (id, title, message, authors).

    One page of the listing that `HfApi.list_repo_commits` reads (it would follow every page of the history)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, validate_repo_id

    validate_repo_id(repo_id)  # it goes into the URL: `owner/name` only, no `..`
    url = f"{hub.endpoint.rstrip('/')}/api/datasets/{quote(repo_id, safe='/')}/commits/{quote(revision, safe='')}"
    response = get_session().get(url, headers=build_hf_headers(token=hub.token))
    hf_raise_for_status(response)
    items = response.json()
    if not isinstance(items, list) or not items:
        raise Ignored(f"no commit found at {revision}")
    return items[0]


def resolve(hub: HubTarget, job: Job) -> Job:
    """The job with its commit (and base branch) filled in; `Ignored` when the event is the bot's own or the pull
    request needs no check. Hub errors propagate."""
    api = hub.api()
    if isinstance(job, MainJob):
        commit = head_commit(hub, job.repo_id, job.sha or job.branch)
        authors = [a.get("user", "") for a in commit.get("authors") or [] if isinstance(a, dict)]
        sha = str(commit.get("id") or job.sha)
        if _is_own(authors, hub.bot_user):
            raise Ignored(f"commit {sha[:8]} on {job.branch} is gradshield-lint's own")
        return replace(job, sha=sha)
    details = api.get_discussion_details(job.repo_id, job.num, repo_type="dataset")
    if not details.is_pull_request:
        raise Ignored(f"discussion #{job.num} is not a pull request")
    if details.status not in OPEN_STATUSES:
        raise Ignored(f"pull request #{job.num} is {details.status}")
    if _is_own([details.author], hub.bot_user):
        raise Ignored(f"pull request #{job.num} was opened by gradshield-lint")
    commits = [e for e in details.events if e.type == "commit"]
    if commits and _is_own([commits[-1].author], hub.bot_user):
        raise Ignored(f"the latest commit of pull request #{job.num} is gradshield-lint's own")
    base = branch_of(details.target_branch) or job.base or DEFAULT_BRANCH
    if job.base is not None and base != job.base:
        raise Ignored(f"pull request #{job.num} merges into {base!r}")
    pr_sha: str | None = job.sha
    if pr_sha is None:
        pr_sha = api.repo_info(job.repo_id, repo_type="dataset", revision=f"refs/pr/{job.num}").sha
    return replace(job, sha=pr_sha, base=base)


# ------------------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Layout:
    """Which repository files are data, which is the baseline (paths relative to the repository root)."""

    globs: tuple[str, ...]
    baseline: str

    def is_data(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        if path == self.baseline or path == CARD_NAME or any(p.startswith(".") or p == ".." for p in parts):
            return False
        if not is_dataset_file(path):
            return False
        return matches(path, self.globs)

    def data_files(self, files: Iterable[str]) -> list[str]:
        return sorted(p for p in files if self.is_data(p))


def layout_of(cfg: Config) -> Layout:
    """The repository layout a configuration describes: `files` globs and the `baseline` path, both read as paths
    inside the dataset repository."""
    b = PurePosixPath(str(cfg.baseline).replace("\\", "/"))
    if b.is_absolute() or ".." in b.parts:
        raise ConfigError(
            f"baseline {cfg.baseline!r}: the webhook app reads the baseline from the dataset repository, "
            "so it must be a path relative to the repository root"
        )
    return Layout(tuple(cfg.files), b.as_posix())


def list_files(hub: HubTarget, repo_id: str, revision: str) -> dict[str, str | None]:
    """path -> git blob id of every file at `revision` (`list_repo_tree`, recursive)."""
    from huggingface_hub.hf_api import RepoFile

    api = hub.api()
    out: dict[str, str | None] = {}
    for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True):
        if isinstance(entry, RepoFile):
            out[entry.path] = entry.blob_id
    return out


def download(hub: HubTarget, repo_id: str, revision: str, paths: Iterable[str], folder: Path) -> dict[str, Path]:
    """Download `paths` at `revision` into `folder`, keeping the repository layout; path -> local file."""
    api = hub.api()
    out: dict[str, Path] = {}
    for p in paths:
        if any(part == ".." for part in PurePosixPath(p).parts) or p.startswith("/"):
            raise ConfigError(f"refusing to download {p!r}: not a plain path inside the repository")
        local = api.hf_hub_download(repo_id, p, repo_type="dataset", revision=revision, local_dir=folder)
        out[p] = Path(local)
    return out


def read_rows(local: dict[str, Path], shape: RowShape | None) -> list[Row]:
    """The rows of the downloaded files, each named by its path in the repository; a row that appears twice (same
    content) is kept once, at its first place."""
    seen: set[str] = set()
    rows: list[Row] = []
    for path in sorted(local):
        for r in iter_rows(local[path], shape):
            if r.id not in seen:
                seen.add(r.id)
                rows.append(Row(r.id, r.messages, path, r.line))
    return rows


# ---------------------------------------------------------------------------------------------- pull requests


@dataclass
class Verdict:
    result: LintResult
    added: int  # rows the pull request adds
    new: int  # of them, rows the baseline does not know (the ones scored)
    changed: list[str]
    baseline: bool  # judged against a baseline on the base branch (else: a sample of its rows)
    baseline_changed: bool


def judge_added(
    engine: Engine,
    added: Sequence[Row],
    cfg: Config,
    *,
    baseline_path: Path | None,
    base_rows: Sequence[Row],
    base: str,
) -> LintResult:
    """Score the rows of `added` that the baseline does not know and judge them against its threshold (no
    baseline: a threshold found on a bounded sample of `base_rows`, as `check --diff-base` does), with p-values
    against the accepted rows and a reason for each finding, as `check` gives them."""
    baseline = load_checked_baseline(baseline_path, engine) if baseline_path is not None else None

    def too_few(n: int) -> str:
        return (
            f"there is no baseline on {base!r} ({cfg.baseline}) and only {n} rows there, too few to find a "
            "threshold; create a baseline with `gradshield-lint baseline create` and push it, or set "
            "threshold.method: fixed"
        )

    return Linter(engine, cfg).judge_rows(added, baseline=baseline, reference_rows=base_rows, too_few=too_few)


def check_pull_request(
    hub: HubTarget, engine: Engine, cfg: Config, job: PullRequestJob, workdir: Path
) -> Verdict | None:
    """The verdict on the rows pull request `job` adds (None: it changes no dataset file)."""
    assert job.sha is not None
    base = job.base or DEFAULT_BRANCH
    lay = layout_of(cfg)
    shape = cfg.rows.row_shape()
    pr_files = list_files(hub, job.repo_id, job.sha)
    base_files = list_files(hub, job.repo_id, base)
    changed = [p for p in lay.data_files(pr_files) if base_files.get(p, "absent") != pr_files[p]]
    if not changed:
        return None
    has_baseline = lay.baseline in base_files
    baseline_changed = pr_files.get(lay.baseline) != base_files.get(lay.baseline)
    pr_dir, base_dir = workdir / "pr", workdir / "base"
    pr_rows = read_rows(download(hub, job.repo_id, job.sha, changed, pr_dir), shape)
    # The rows those files already hold on the base branch are not added (without a baseline, all of its rows
    # are needed: the threshold comes from a sample of them).
    old = [p for p in (changed if has_baseline else lay.data_files(base_files)) if p in base_files]
    base_rows = read_rows(download(hub, job.repo_id, base, old, base_dir), shape)
    known = {r.id for r in base_rows}
    added = [r for r in pr_rows if r.id not in known]
    baseline_path = None
    if has_baseline:
        baseline_path = download(hub, job.repo_id, base, [lay.baseline], base_dir)[lay.baseline]
    result = judge_added(engine, added, cfg, baseline_path=baseline_path, base_rows=base_rows, base=base)
    return Verdict(result, len(added), result.rows_scored, changed, has_baseline, baseline_changed)


def code_block(text: str, info: str = "text") -> str:
    """`text` as a fenced code block no line of it can close: a fence one backtick longer than any backtick run in
    it (at least three); control characters other than newlines and tabs are dropped."""
    text = "".join(
        ch for ch in text.replace("\r\n", "\n") if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _code_list(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(code_span(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def pr_comment(v: Verdict, job: PullRequestJob, cfg: Config) -> str:
    """The comment: the linter's report of the scored rows, then what was checked against what. Every name that
    comes from the repository (file paths, the branch) is a `code_span`; row excerpts are escaped by the report."""
    body = comment_text(v.result, excerpt_chars=cfg.report.excerpt_chars)
    base = code_span(job.base or DEFAULT_BRANCH)
    baseline = code_span(str(cfg.baseline))
    s = "s" if v.added != 1 else ""
    what = (
        f"Checked commit {code_span((job.sha or '')[:8])} of this pull request: {v.added} row{s} added to "
        f"{_code_list(v.changed)}"
    )
    if v.baseline:
        against = (
            "its accepted rows"
            if v.result.verdict is not None and v.result.verdict.mode == "pull-request"
            else "its threshold"
        )
        what += f", {v.new} of them new to the baseline on {base} ({baseline}), judged against {against}."
    else:
        what += (
            f", judged against a threshold found on a sample of the rows on {base}: there is no baseline "
            f"({baseline}) there; create one with `gradshield-lint baseline create` for stable verdicts."
        )
    notes = [what]
    if v.baseline_changed:
        notes.append(
            f"This pull request also changes {baseline}; its rows are judged against the baseline on "
            f"{base}, not against its own."
        )
    return "\n".join([COMMENT_MARKER, body.rstrip(), "", "---", "", *(f"<sub>{n}</sub>" for n in notes), ""])


def error_comment(message: str, job: PullRequestJob) -> str:
    """The comment when the pull request's data cannot be read: the message (it names files and lines of the
    pull request, so it is hostile text) in a code block it cannot close."""
    return "\n".join(
        [
            COMMENT_MARKER,
            "### gradshield-lint: :warning: could not check this pull request",
            "",
            code_block(message),
            "",
            (
                f"<sub>Commit {code_span((job.sha or '')[:8])}. Fix the data (or the baseline on "
                f"{code_span(job.base or DEFAULT_BRANCH)}) and push again: every new commit is checked.</sub>"
            ),
            "",
        ]
    )


def _clean(message: str, folders: dict[Path, str]) -> str:
    """Error messages name repository paths (`label` + path), not the temporary download folders."""
    for folder, label in folders.items():
        for f in {str(folder), os.path.realpath(folder)}:
            message = message.replace(f + os.sep, label)
    return message


def run_pull_request(hub: HubTarget, engine: Engine, cfg: Config, job: PullRequestJob) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="gradshield-pr-") as tmp:
        workdir = Path(tmp)
        try:
            verdict = check_pull_request(hub, engine, cfg, job, workdir)
        except GradshieldError as exc:  # bad rows, an incompatible baseline, ...: tell the pull request
            message = _clean(str(exc), {workdir / "pr": "", workdir / "base": f"{job.base or DEFAULT_BRANCH}:"})
            comment = post_discussion_comment(
                job.repo_id, job.num, error_comment(message, job), token=hub.token, endpoint=hub.endpoint
            )
            return Outcome(job, "commented", f"could not check: {message}", _comment_url(hub, job, comment))
    if verdict is None:
        return Outcome(job, "skipped", f"pull request #{job.num} changes no dataset file")
    text = pr_comment(verdict, job, cfg)
    comment = post_discussion_comment(job.repo_id, job.num, text, token=hub.token, endpoint=hub.endpoint)
    n = len(verdict.result.findings)
    return Outcome(
        job,
        "commented",
        f"{plural(verdict.new, 'row')} scored, {n} flagged",
        _comment_url(hub, job, comment),
        verdict.result,
    )


def _comment_url(hub: HubTarget, job: PullRequestJob, comment: Any) -> str:
    cid = getattr(comment, "id", "")
    return f"{hub.endpoint.rstrip('/')}/datasets/{job.repo_id}/discussions/{job.num}" + (f"#{cid}" if cid else "")


# ----------------------------------------------------------------------------------------------------------- main


def run_main(hub: HubTarget, engine: Engine, cfg: Config, job: MainJob) -> Outcome:
    """Re-check the branch at `job.sha` (against its baseline, or a scan without one) and push the card report."""
    assert job.sha is not None
    lay = layout_of(cfg)
    files = list_files(hub, job.repo_id, job.sha)
    data = lay.data_files(files)
    if not data:
        return Outcome(job, "skipped", f"no dataset files on {job.branch} at {job.sha[:8]}")
    with tempfile.TemporaryDirectory(prefix="gradshield-main-") as tmp:
        # Named like the repository: a card created from nothing takes the folder's name as its pretty_name.
        folder = Path(tmp) / job.repo_id.split("/")[-1]
        extra = [p for p in (lay.baseline, CARD_NAME) if p in files]
        try:
            local = download(hub, job.repo_id, job.sha, [*data, *extra], folder)
            paths: list[str | Path] = [local[p] for p in data]
            linter = Linter(engine, cfg)
            if lay.baseline in local:
                result = linter.check(paths, baseline_path=local[lay.baseline])
            else:
                result, _ = linter.scan(paths)
            upd = write_card_report(
                folder / CARD_NAME, result, max_rows=cfg.report.max_rows, excerpt_chars=cfg.report.excerpt_chars
            )
        except GradshieldError as exc:
            return Outcome(job, "failed", _clean(str(exc), {folder: ""}))
        head = hub.api().repo_info(job.repo_id, repo_type="dataset", revision=job.branch).sha
        if head != job.sha:
            return Outcome(
                job,
                "skipped",
                f"{job.branch} moved on from {job.sha[:8]} to {str(head)[:8]}; the event "
                "of that commit updates the card",
                result=result,
            )
        message = f"{COMMIT_PREFIX} update the dataset card report ({job.sha[:8]})"
        url = push_card(
            job.repo_id,
            upd.card_path,
            upd.image_path,
            create_pr=False,
            token=hub.token,
            endpoint=hub.endpoint,
            commit_message=message,
            revision=job.branch,
            parent_commit=job.sha,
        )
    n = len(result.findings)
    return Outcome(job, "card-updated", f"{plural(result.rows_scored, 'row')} scored, {n} flagged", url, result)


def run_job(hub: HubTarget, engine: Engine, cfg: Config, job: Job) -> Outcome:
    if isinstance(job, MainJob):
        return run_main(hub, engine, cfg, job)
    return run_pull_request(hub, engine, cfg, job)


def describe_exception(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


__all__ = [
    "COMMENT_MARKER",
    "HubTarget",
    "Ignored",
    "Layout",
    "Outcome",
    "check_pull_request",
    "describe_exception",
    "head_commit",
    "judge_added",
    "layout_of",
    "list_files",
    "resolve",
    "run_job",
    "run_main",
    "run_pull_request",
]
