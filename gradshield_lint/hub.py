"""Hugging Face Hub: the report in the dataset card, pushing it (commit or pull request), discussion comments.

The card keeps everything a person wrote byte-for-byte. Two things in it belong to gradshield-lint:

- one top-level YAML metadata key, `gradshield:` (model, probe set, proxy, threshold, row counts), and
- one Markdown section between `<!-- gradshield:start -->` and `<!-- gradshield:end -->` (each on its own line).

Both are replaced in place on each run and never duplicated. `huggingface_hub`'s `metadata_save` (and the
`DatasetCard.content` round trip) re-serialize the whole YAML block, which drops comments, re-quotes strings and can
reorder keys, and `metadata_update` works on a card on the Hub, not a file. So the YAML block is located with the
Hub's own regex (`huggingface_hub.repocard.REGEX_YAML_BLOCK`), only the lines of the `gradshield:` key are
replaced with `huggingface_hub.utils.yaml_dump` output, and the result is checked with `DatasetCard` and
`metadata_load`: the other keys must load to exactly what they loaded to before, or nothing is written.

Network calls go through `HfApi` (`create_commit` with `CommitOperationAdd`, `comment_discussion`), with
`endpoint=` for a mirror or a test server.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import yaml

from gradshield_lint.errors import GradshieldError
from gradshield_lint.io.atomic import atomic_write_many
from gradshield_lint.lint.findings import LintResult
from gradshield_lint.report import split
from gradshield_lint.report.card import IMAGE_NAME, SECTION_END, SECTION_START, card_section, histogram_png
from gradshield_lint.report.markdown import discussion_comment

GRADSHIELD_KEY = "gradshield"
# Commits and comments made by gradshield-lint start with this, so the webhook app can ignore its own events.
COMMIT_PREFIX = "gradshield-lint:"
CARD_NAME = "README.md"

__all__ = [
    "CARD_NAME",
    "COMMIT_PREFIX",
    "GRADSHIELD_KEY",
    "IMAGE_NAME",
    "SECTION_END",
    "SECTION_START",
    "CardError",
    "CardUpdate",
    "HubError",
    "card_metadata",
    "comment_text",
    "post_discussion_comment",
    "push_card",
    "update_card_text",
    "write_card_report",
]


class CardError(GradshieldError):
    """A dataset card that cannot be updated safely (nothing is written)."""


class HubError(GradshieldError):
    """A Hub call that failed (network, authentication, offline mode); the message says what to do."""


@dataclass(frozen=True)
class CardUpdate:
    """What `write_card_report` did."""

    card_path: Path
    image_path: Path | None  # None when there were no scores or matplotlib is not installed (text histogram)
    created: bool  # the card did not exist and was created
    changed: bool  # the card's bytes changed
    metadata: dict[str, Any]  # the value of the `gradshield:` key
    section: str  # the Markdown section, markers included


# --------------------------------------------------------------------------------------------------------- metadata


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def card_metadata(result: LintResult) -> dict[str, Any]:
    """The value of the card's `gradshield:` YAML key."""
    s = split(result)
    return {
        "model": result.model or None,
        "probe_set": result.probe_set or None,
        "proxy": result.proxy or None,
        "threshold": _round(result.threshold),
        "threshold_method": result.threshold_method or None,
        "rows_total": int(result.rows_total),
        "rows_scored": int(result.rows_scored),
        "rows_flagged": len(s.flagged),
        "rows_accepted": len(s.accepted),
    }


def _dump_key(value: dict[str, Any], line_break: str) -> str:
    from huggingface_hub.utils import yaml_dump

    return yaml_dump({GRADSHIELD_KEY: value}, sort_keys=False, line_break=line_break, default_flow_style=False)


# ------------------------------------------------------------------------------------------------- text surgery

_KEY_LINE = re.compile(r"""^(?:gradshield|"gradshield"|'gradshield')[ \t]*:(?:\s|$)""")
_EMPTY_YAML = re.compile(r"^(\s*---(?:\r\n|\r|\n))(---[ \t]*(?:\r\n|\r|\n|$))")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _line_break_of(text: str) -> str:
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    if crlf == lf == cr == 0:
        return "\n"
    best = max((crlf, "\r\n"), (lf, "\n"), (cr, "\r"), key=lambda t: t[0])
    return best[1]


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _lines(text: str) -> list[str]:
    """Lines with their endings; only CR LF, LF and CR end a line (unlike `str.splitlines`), so joining is exact."""
    return _LINE.findall(text)


def _strip_eol(line: str) -> tuple[str, str]:
    for eol in ("\r\n", "\n", "\r"):
        if line.endswith(eol):
            return line[: -len(eol)], eol
    return line, ""


def _replace_yaml_key(body: str, dumped: str, line_break: str) -> str:
    """Replace the lines of the top-level `gradshield:` key in a YAML block body (or append them)."""
    lines = _lines(body)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if _KEY_LINE.match(lines[i]):
            j = i + 1
            while j < len(lines) and (lines[j][:1] in (" ", "\t") or not lines[j].strip()):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # blank lines after the block are not ours
                j -= 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    if not spans:
        if not body:
            return dumped[: -len(line_break)] if dumped.endswith(line_break) else dumped
        _, eol = _strip_eol(lines[-1])
        prefix = body if eol else body + line_break
        # `body` ends without a line break (the block's closing `---` follows it): keep it that way.
        return prefix + (dumped[: -len(line_break)] if dumped.endswith(line_break) else dumped)
    out: list[str] = []
    prev = 0
    for n, (a, b) in enumerate(spans):
        out.extend(lines[prev:a])
        if n == 0:
            _, eol = _strip_eol(lines[b - 1])
            # The last line of the body has no line break (the closing `---` line supplies it): keep it so.
            out.append(dumped if eol else dumped[: -len(line_break)])
        prev = b
    out.extend(lines[prev:])
    return "".join(out)


def _section_spans(lines: list[str], path: str, offset: int) -> list[tuple[int, int]]:
    """(start, end) line indexes of each marked section, skipping fenced code blocks."""
    spans: list[tuple[int, int]] = []
    fence: str | None = None
    start: int | None = None
    for i, raw in enumerate(lines):
        line, _ = _strip_eol(raw)
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
            continue
        if m and start is None:
            fence = m.group(1)
            continue
        stripped = line.strip()
        if stripped == SECTION_START:
            if start is not None:
                raise CardError(
                    f"two `{SECTION_START}` markers without `{SECTION_END}` between them",
                    file=path,
                    line=offset + i + 1,
                )
            start = i
        elif stripped == SECTION_END and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        raise CardError(
            f"`{SECTION_START}` has no matching `{SECTION_END}`; restore the end marker or delete the start marker",
            file=path,
            line=offset + start + 1,
        )
    return spans


def _replace_section(text: str, section: str, line_break: str, path: str, line_offset: int) -> str:
    lines = _lines(text)
    spans = _section_spans(lines, path, line_offset)
    if not spans:
        if not text:
            return section + line_break
        if text.endswith(("\n", "\r")):
            return text + line_break + section + line_break
        return text + line_break + line_break + section + line_break
    out: list[str] = []
    prev = 0
    for n, (a, b) in enumerate(spans):
        out.extend(lines[prev:a])
        if n == 0:
            _, eol = _strip_eol(lines[b])
            out.append(section + eol)
        prev = b + 1
    out.extend(lines[prev:])
    return "".join(out)


def _load_yaml_block(content: str) -> tuple[re.Match | None, dict[str, Any]]:
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(content)
    if not match:
        return None, {}
    data = yaml.safe_load(match.group(2))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("the card's YAML metadata block is not a mapping")
    return match, data


def update_card_text(content: str, metadata: dict[str, Any], section: str | None, *, path: str = CARD_NAME) -> str:
    """The card `content` with the `gradshield:` key set to `metadata` and the marked section set to `section`.

    Everything else is kept byte-for-byte (line endings and a UTF-8 BOM included). `section` (markers included,
    without a trailing line break, written with `\\n`) is converted to the card's line break; None leaves the
    Markdown alone. Raises `CardError` when the card cannot be updated safely.
    """
    bom = "\ufeff" if content.startswith("\ufeff") else ""
    content = content[len(bom) :]
    lb = _line_break_of(content)
    dumped = _dump_key(metadata, lb)
    try:
        match, before = _load_yaml_block(content)
    except (yaml.YAMLError, ValueError) as exc:
        raise CardError(f"the card's YAML metadata block does not load: {exc}", file=path) from None

    head_end = 0  # where the metadata block of the original content ends
    if match is not None:
        head_end = match.end()
        new_body = _replace_yaml_key(match.group(2), dumped, lb)
        head = content[: match.start(2)] + new_body + match.group(3)
        rest = content[match.end() :]
    else:
        empty = _EMPTY_YAML.match(content)
        if empty is not None:  # `---` directly followed by `---`: the Hub sees no metadata block at all
            head = empty.group(1) + dumped + empty.group(2)
            head_end = empty.end()
            rest = content[empty.end() :]
        else:
            head = f"---{lb}{dumped}---{lb}"
            rest = content
    if section is not None:
        offset = len(_lines(content[:head_end]))
        rest = _replace_section(rest, section.replace("\n", lb), lb, path, offset)
    new = head + rest

    # Check: the Hub's parser finds the block, our key has our value, every other key loads as before.
    try:
        match_after, after = _load_yaml_block(new)
    except (yaml.YAMLError, ValueError) as exc:
        raise CardError(
            f"adding the `{GRADSHIELD_KEY}:` key would break the card's YAML ({exc}); nothing written", file=path
        ) from None
    expected = {k: v for k, v in before.items() if k != GRADSHIELD_KEY}
    got = {k: v for k, v in after.items() if k != GRADSHIELD_KEY}
    keys = 0 if match_after is None else sum(1 for ln in _lines(match_after.group(2)) if _KEY_LINE.match(ln))
    if match_after is None or keys != 1 or got != expected or after.get(GRADSHIELD_KEY) != metadata:
        raise CardError(
            f"could not update the `{GRADSHIELD_KEY}:` key without changing other metadata (is the YAML block in flow "
            "style, or the key written by hand?); nothing written",
            file=path,
        )
    return bom + new


# --------------------------------------------------------------------------------------------------------- files


def _minimal_card(card_path: Path) -> str:
    """A minimal valid dataset card, built with `DatasetCard`/`DatasetCardData`."""
    from huggingface_hub import DatasetCard, DatasetCardData

    name = card_path.resolve().parent.name or "dataset"
    data = DatasetCardData(pretty_name=name)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n# {name}\n")
    return str(card)


def _link(target: Path, card_dir: Path) -> str:
    rel = os.path.relpath(target.resolve(), card_dir.resolve()).replace(os.sep, "/")
    return quote(rel, safe="/")


def write_card_report(
    card_path: Path,
    result: LintResult,
    *,
    image_dir: Path | None = None,
    max_rows: int = 10,
    excerpt_chars: int = 80,
) -> CardUpdate:
    """Write the report into the dataset card at `card_path` (created, minimal and valid, if missing).

    Sets the `gradshield:` YAML key and the marked Markdown section, writes `gradshield-scores.png` (FIHS
    histogram, threshold marked) into `image_dir` (default: beside the card) and links it from the section.
    Everything is built and validated first; then the image and the card are written as one commit (the card
    last, `atomic.atomic_paths`). On any `CardError` nothing is written: neither the card nor the image.
    """
    card_path = Path(card_path)
    if card_path.is_dir():
        card_path = card_path / CARD_NAME
    created = not card_path.exists()
    if created:
        original = b""
        content = _minimal_card(card_path)
    else:
        try:
            original = card_path.read_bytes()
        except OSError as exc:
            raise CardError(f"cannot read the card: {exc.strerror}", file=card_path) from None
        try:
            content = original.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CardError(f"the card is not UTF-8 (byte {exc.start})", file=card_path) from None

    # Everything is built and checked before anything is written: a card that fails leaves no new image behind.
    card_dir = card_path.parent
    image_path: Path | None = None
    image_link: str | None = None
    png: bytes | None = None
    if result.scores:
        target = Path(image_dir if image_dir is not None else card_dir) / IMAGE_NAME
        try:
            png = histogram_png(result.scores, result.threshold)
            image_path = target
            image_link = _link(image_path, card_dir)
        except ImportError:  # matplotlib is optional (extra `plot`): the section gets a text histogram
            image_path = None

    metadata = card_metadata(result)
    section = card_section(
        result, image_link=image_link, max_rows=max_rows, excerpt_chars=excerpt_chars, base=str(card_dir)
    )
    new = update_card_text(content, metadata, section, path=str(card_path))
    data = new.encode("utf-8")

    from huggingface_hub import DatasetCard

    try:
        DatasetCard(new.removeprefix("\ufeff"))  # as `DatasetCard.load` reads it (utf-8-sig)
    except Exception as exc:  # noqa: BLE001 - the library's own parser is the judge
        raise CardError(
            f"the updated card does not load with huggingface_hub ({exc}); nothing written", file=card_path
        ) from None
    changed = data != original
    writes: list[tuple[Path, bytes]] = []
    if png is not None and image_path is not None:
        writes.append((image_path, png))
    if changed:
        writes.append((card_path, data))  # last: the card is the commit point (see atomic.py)
    if writes:
        atomic_write_many(writes)
    return CardUpdate(card_path, image_path, created, changed, metadata, section)


# ----------------------------------------------------------------------------------------------------------- Hub


def _api(token: str | None, endpoint: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _hub_error(exc: Exception, what: str) -> HubError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return HubError(f"cannot {what}: HF_HUB_OFFLINE is set; unset it to reach the Hub")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        hint = ""
        if status in (401, 403):
            hint = " (set HF_TOKEN or run `hf auth login` with a token that can write to the repository)"
        elif status == 404:
            hint = " (does the dataset repository exist, and can this token see it?)"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return HubError(f"cannot {what}: {first}{hint}")
    return HubError(f"cannot {what}: {type(exc).__name__}: {exc}")


def _network_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[Exception]] = [HfHubHTTPError, OfflineModeIsEnabled, OSError]
    try:
        import httpx2

        errors.append(httpx2.HTTPError)
    except ImportError:  # older huggingface_hub releases use requests/httpx
        pass
    return tuple(errors)


def push_card(
    repo_id: str,
    card_path: Path,
    image_path: Path | None,
    *,
    create_pr: bool,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    parent_commit: str | None = None,
) -> str:
    """Upload the card (as `README.md`) and its histogram image to dataset `repo_id` in one commit.

    With `create_pr` the commit opens a pull request. Returns the URL of the pull request, or of the commit. When
    the Hub already holds identical files, `huggingface_hub` makes no commit (and no pull request) and the URL is
    that of the current head commit.
    The image keeps its path relative to the card (by default `gradshield-scores.png` at the repository root),
    which is where the card's link points. `token` None: the usual `HF_TOKEN` / saved login. `parent_commit`: the
    Hub refuses the commit if the branch moved past it (nobody's concurrent card edit is overwritten).
    """
    from huggingface_hub import CommitOperationAdd

    card_path = Path(card_path)
    operations = [CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=str(card_path))]
    if image_path is not None:
        image_path = Path(image_path)
        rel = os.path.relpath(image_path.resolve(), card_path.resolve().parent).replace(os.sep, "/")
        if rel.startswith("../"):
            raise HubError(f"the image {image_path} lies outside the card's directory; it cannot be uploaded beside it")
        operations.append(CommitOperationAdd(path_in_repo=str(PurePosixPath(rel)), path_or_fileobj=str(image_path)))
    message = commit_message or f"{COMMIT_PREFIX} update the dataset card report"
    try:
        info = _api(token, endpoint).create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=message,
            commit_description="Written by gradshield-lint (FIHS safety-alignment lint of the dataset rows).",
            repo_type="dataset",
            create_pr=create_pr,
            revision=revision,
            parent_commit=parent_commit,
        )
    except _network_errors() as exc:
        raise _hub_error(exc, f"push the card to {repo_id}") from exc
    return info.pr_url or info.commit_url


def post_discussion_comment(
    repo_id: str,
    discussion_num: int,
    text: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    repo_type: str = "dataset",
) -> Any:
    """Post `text` (Markdown) as a comment on discussion / pull request `discussion_num` of `repo_id`.

    Returns huggingface_hub's `DiscussionComment` (its `id` names the comment).
    """
    try:
        return _api(token, endpoint).comment_discussion(
            repo_id=repo_id, discussion_num=discussion_num, comment=text, repo_type=repo_type
        )
    except _network_errors() as exc:
        raise _hub_error(exc, f"comment on {repo_id} discussion #{discussion_num}") from exc


def comment_text(result: LintResult, *, max_rows: int = 20, excerpt_chars: int = 80) -> str:
    """The Markdown of a pull-request comment for `result` (content warning, flagged rows, histogram)."""
    return discussion_comment(result, max_rows=max_rows, excerpt_chars=excerpt_chars)
