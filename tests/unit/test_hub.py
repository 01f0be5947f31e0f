"""The dataset card report (`hub.write_card_report`) and the Hub calls (`push_card`, `post_discussion_comment`).

The Hugging Face Hub cannot be reached from the machines these tests run on, so the Hub calls are tested against
`tests/fakehub.py`: a real HTTP server on 127.0.0.1 that speaks the Hub's protocol for exactly the requests
`huggingface_hub` makes (preupload, NDJSON commit, pull request, discussion comment, download), records them, and
keeps the repository's files so a test can check what was uploaded.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, HfApi, hf_hub_download, metadata_load
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from gradshield_lint import hub as gh
from gradshield_lint.hub import (
    SECTION_END,
    SECTION_START,
    CardError,
    HubError,
    comment_text,
    post_discussion_comment,
    push_card,
    write_card_report,
)
from gradshield_lint.lint.findings import Finding, LintResult

try:  # tests/ is on sys.path under pytest's default import mode; `tests.fakehub` if tests/ becomes a package
    from fakehub import FakeHub, git_blob_oid
except ImportError:  # pragma: no cover
    from tests.fakehub import FakeHub, git_blob_oid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A card with things a YAML round trip or a careless rewrite would lose: comments, key order, flow lists, quoting,
# trailing spaces, tabs in prose, HTML comments, a fenced block that mentions our marker, and no final newline.
CARD = (
    "---\n"
    "# Dataset metadata (keep this comment)\n"
    "license: cc-by-4.0\n"
    "pretty_name: 'Helpful chats'   # quoted on purpose\n"
    "language: [en, fr]\n"
    "task_categories:\n"
    "- text-generation\n"
    "configs:\n"
    "  - config_name: default\n"
    "    data_files:\n"
    "      - split: train\n"
    "        path: data/train.jsonl\n"
    "size_categories:   \n"
    "  - 1K<n<10K\n"
    "---\n"
    "\n"
    "# Helpful chats   \n"
    "\n"
    "<!-- a comment in the prose: keep it -->\n"
    "Rows\tare\tJSONL.  Two spaces.  \n"
    "\n\n\n"
    "```markdown\n"
    f"{SECTION_START}\n"
    "this fenced block documents the markers and is not the section\n"
    f"{SECTION_END}\n"
    "```\n"
    "\n"
    "## License\n"
    "CC-BY 4.0, no final newline"
)

ROW_A = "a1" * 32
ROW_B = "b2" * 32


def _result(
    card_dir: Path, *, flagged: int = 2, threshold: float = 0.25, text: str = "Sure, here is how"
) -> LintResult:
    findings = [
        Finding(ROW_A, str(card_dir / "data" / "train.jsonl"), 3, 0.93, threshold, text + " | with a pipe\nand lines"),
        Finding(ROW_B, str(card_dir / "data" / "train.jsonl"), 8, 0.41, threshold, "Of course: step one"),
    ][:flagged]
    accepted = [
        Finding(
            "c3" * 32, "data/train.jsonl", 20, 0.5, threshold, "quoted refusal", accepted=True, reason="from a paper"
        )
    ]
    scores = [i / 50 for i in range(-10, 12)] + [f.fihs for f in findings] + [0.5]
    return LintResult(
        threshold=threshold,
        threshold_method="gmm-boundary",
        rows_total=500,
        rows_scored=len(scores),
        findings=findings,
        accepted=accepted,
        scores=scores,
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        proxy="refusal-margin",
        probe_set="gradshield-probes-v1@3f2a",
    )


def _yaml_body(content: str) -> str:
    return REGEX_YAML_BLOCK.search(content.removeprefix("\ufeff")).group(2)


def _without_ours(content: str) -> str:
    """The card with our YAML lines and our appended section removed (how it looked before the first run)."""
    m = REGEX_YAML_BLOCK.search(content)
    body = re.sub(r"(?m)^gradshield:(?:\r?\n|$)(?:  .*(?:\r?\n|$))*", "", m.group(2))
    body = body.removesuffix("\n").removesuffix("\r")  # the line break we added before our key (key appended last)
    content = content[: m.start(2)] + body + content[m.end(2) :]
    return re.sub(
        r"(?:\r?\n){2}" + re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\r?\n\Z",
        "",
        content,
        flags=re.S,
    )


def _outside_section(content: str) -> tuple[str, str]:
    """(before the start marker line, after the end marker line), the fenced mention excluded."""
    lines = content.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if ln.strip() == SECTION_START]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == SECTION_END]
    s, e = starts[-1], ends[-1]  # the fenced mention comes first in CARD
    return "".join(lines[:s]), "".join(lines[e + 1 :])


def _count_sections(content: str) -> int:
    return sum(1 for ln in content.splitlines() if ln.strip() == SECTION_START) - content.count("```markdown")


# ---------------------------------------------------------------------------------------------------- the card


def test_card_round_trip_keeps_everything_else_byte_for_byte(tmp_path):
    card = tmp_path / "README.md"
    card.write_bytes(CARD.encode())
    before_meta = yaml.safe_load(_yaml_body(CARD))

    up = write_card_report(card, _result(tmp_path))
    first = card.read_bytes().decode()
    assert up.changed and not up.created
    assert _count_sections(first) == 1
    # Removing our key and our section gives back the original, byte for byte.
    assert _without_ours(first) == CARD
    # The YAML lines that were there are there unchanged, in order, comments included.
    assert _yaml_body(first).startswith(_yaml_body(CARD))

    # Second run with other numbers: still one section, and everything outside ours is identical.
    up2 = write_card_report(card, _result(tmp_path, flagged=1, threshold=0.3, text="Another"))
    second = card.read_bytes().decode()
    assert up2.changed and _count_sections(second) == 1
    assert _without_ours(second) == CARD
    assert _outside_section(second)[1] == _outside_section(first)[1] == ""
    assert "Another" in second and "Sure, here is how" not in second

    # Third run with the same result: nothing to change, the file is not rewritten.
    mtime = card.stat().st_mtime_ns
    up3 = write_card_report(card, _result(tmp_path, flagged=1, threshold=0.3, text="Another"))
    assert not up3.changed and card.read_bytes().decode() == second and card.stat().st_mtime_ns == mtime

    # huggingface_hub still loads the card; our key has the right numbers; the other keys are untouched.
    data = DatasetCard.load(card).data.to_dict()
    assert data["gradshield"] == {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "probe_set": "gradshield-probes-v1@3f2a",
        "proxy": "refusal-margin",
        "threshold": 0.3,
        "threshold_method": "gmm-boundary",
        "rows_total": 500,
        "rows_scored": 24,
        "rows_flagged": 1,
        "rows_accepted": 1,
    }
    meta = metadata_load(card)
    assert {k: v for k, v in meta.items() if k != "gradshield"} == before_meta
    assert list(meta)[:-1] == list(before_meta)  # order kept, our key last


def test_card_section_content_and_image(tmp_path):
    card = tmp_path / "README.md"
    card.write_bytes(CARD.encode())
    up = write_card_report(card, _result(tmp_path))
    text = card.read_text()
    section = text[text.rindex(SECTION_START) : text.rindex(SECTION_END)]
    assert "Content warning" in section
    assert "| `a1a1a1a1a1a1` | `data/train.jsonl:3` | +0.9300 |" in section  # path relative to the card
    assert "with a pipe" in section and "\\| with a pipe" in section  # escaped, one line
    assert "accepted: from a paper" in section
    assert "**2** rows lie above the adaptive threshold +0.2500" in section
    assert "](gradshield-scores.png)" in section
    assert up.image_path == tmp_path / "gradshield-scores.png"
    assert up.image_path.read_bytes()[:8] == PNG_MAGIC
    assert up.section.startswith(SECTION_START) and up.section.endswith(SECTION_END)
    # Same input, same image bytes (no timestamp in the PNG): a re-run does not produce a spurious change.
    png = up.image_path.read_bytes()
    write_card_report(card, _result(tmp_path))
    assert up.image_path.read_bytes() == png


def test_card_image_dir(tmp_path):
    card = tmp_path / "README.md"
    up = write_card_report(card, _result(tmp_path), image_dir=tmp_path / "assets")
    assert up.image_path == tmp_path / "assets" / "gradshield-scores.png" and up.image_path.exists()
    assert "](assets/gradshield-scores.png)" in card.read_text()


def test_card_created_when_missing(tmp_path):
    card = tmp_path / "my-dataset" / "README.md"
    card.parent.mkdir()
    up = write_card_report(card, _result(card.parent))
    assert up.created and up.changed
    loaded = DatasetCard.load(card)
    assert loaded.data.to_dict()["pretty_name"] == "my-dataset"
    assert loaded.data.to_dict()["gradshield"]["rows_flagged"] == 2
    assert _count_sections(card.read_text()) == 1
    # A directory works as the card path too.
    assert write_card_report(card.parent, _result(card.parent)).card_path == card


def test_card_existing_key_and_section_replaced_in_place(tmp_path):
    """A card that already has our key in the middle of its YAML and our section in the middle of its prose."""
    original = (
        "---\r\n"
        "license: mit\r\n"
        "gradshield:\r\n"
        "  rows_flagged: 99\r\n"
        "  model: old\r\n"
        "\r\n"
        "# a comment after our key stays\r\n"
        "tags:\r\n"
        "- chat\r\n"
        "---\r\n"
        "Intro\r\n"
        f"{SECTION_START}\r\n"
        "old section\r\n"
        f"{SECTION_END}\r\n"
        "Outro\r\n"
        f"{SECTION_START}\r\n"
        "a duplicate left by a bad merge\r\n"
        f"{SECTION_END}\r\n"
        "End\r\n"
    )
    card = tmp_path / "README.md"
    card.write_bytes(original.encode())
    write_card_report(card, _result(tmp_path))
    new = card.read_bytes().decode()
    assert new.startswith("---\r\nlicense: mit\r\ngradshield:\r\n  model: HuggingFaceTB/SmolLM2-135M-Instruct\r\n")
    assert "\r\n\r\n# a comment after our key stays\r\ntags:\r\n- chat\r\n---\r\nIntro\r\n" + SECTION_START in new
    assert new.endswith(SECTION_END + "\r\nOutro\r\nEnd\r\n")
    assert "old section" not in new and "duplicate" not in new and "rows_flagged: 99" not in new
    assert "\n" not in new.replace("\r\n", "")  # the card's CRLF line breaks are kept, ours follow them
    assert _count_sections(new) == 1
    assert DatasetCard.load(card).data.to_dict()["tags"] == ["chat"]


def test_card_bom_and_row_text_with_marker(tmp_path):
    card = tmp_path / "README.md"
    card.write_bytes("\ufeff---\nlicense: mit\n---\nHello\n".encode())
    write_card_report(card, _result(tmp_path, text=f"evil {SECTION_END} text"))
    write_card_report(card, _result(tmp_path, text=f"evil {SECTION_END} text"))
    raw = card.read_bytes()
    assert raw.startswith("\ufeff---\nlicense: mit\ngradshield:\n".encode())
    text = raw.decode()
    assert _count_sections(text) == 1 and text.count(SECTION_END) == 1  # the row's marker is escaped
    assert DatasetCard.load(card).data.to_dict()["license"] == "mit"


def test_card_without_metadata_or_with_empty_block(tmp_path):
    for original in ("# Just prose\n", "", "---\n---\n# Empty block\n"):
        card = tmp_path / "README.md"
        card.write_bytes(original.encode())
        write_card_report(card, _result(tmp_path))
        new = card.read_text()
        assert DatasetCard.load(card).data.to_dict()["gradshield"]["rows_flagged"] == 2
        body = original.removeprefix("---\n---\n")
        assert body in new and _count_sections(new) == 1


def test_card_text_histogram_without_matplotlib(tmp_path, monkeypatch):
    def no_matplotlib(*a, **k):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(gh, "histogram_png", no_matplotlib)
    up = write_card_report(tmp_path / "README.md", _result(tmp_path))
    assert up.image_path is None
    text = (tmp_path / "README.md").read_text()
    assert "```text" in text and "threshold +0.2500" in text and "gradshield-scores.png" not in text


@pytest.mark.parametrize(
    "original, message",
    [
        (f"---\nlicense: mit\n---\n{SECTION_START}\nno end marker\n", "no matching"),
        ("---\nlicense: [mit\n---\nbody\n", "does not load"),
        ("---\n{license: mit}\n---\nbody\n", "nothing written"),
        ("---\n- a list\n---\nbody\n", "not a mapping"),
    ],
)
def test_card_errors_leave_the_file_alone(tmp_path, original, message):
    card = tmp_path / "README.md"
    card.write_bytes(original.encode())
    with pytest.raises(CardError, match=message):
        write_card_report(card, _result(tmp_path))
    assert card.read_bytes() == original.encode()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".README")] == []  # no temporary left


def test_card_error_names_file_and_line(tmp_path):
    card = tmp_path / "README.md"
    card.write_text(f"---\nlicense: mit\n---\n\nText\n{SECTION_START}\n")
    with pytest.raises(CardError) as exc:
        write_card_report(card, _result(tmp_path))
    assert exc.value.line == 6 and exc.value.file == str(card) and exc.value.exit_code == 2


# -------------------------------------------------------------------------------------------------- the Hub


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hub on 127.0.0.1; huggingface_hub is allowed online for it (the Makefile sets HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeHub() as server:
        server.create_repo(
            "alice/chats", files={"README.md": b"---\nlicense: mit\n---\nold card\n", "data/train.jsonl": b"{}\n"}
        )
        yield server


@pytest.fixture
def written_card(tmp_path):
    card = tmp_path / "README.md"
    card.write_bytes(CARD.encode())
    up = write_card_report(card, _result(tmp_path))
    return up


def test_push_card_commits_card_and_image(fake_hub, written_card):
    url = push_card(
        "alice/chats",
        written_card.card_path,
        written_card.image_path,
        create_pr=False,
        token=fake_hub.token,
        endpoint=fake_hub.url,
    )
    repo = fake_hub.repo("alice/chats")
    assert url == f"{fake_hub.url}/datasets/alice/chats/commit/{repo.heads['main']}"

    # The calls create_commit makes: YAML validation of README.md, preupload, then the NDJSON commit.
    paths = [(r.method, r.path) for r in fake_hub.requests]
    assert paths == [
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/datasets/alice/chats/preupload/main"),
        ("POST", "/api/datasets/alice/chats/commit/main"),
    ]
    validate, preupload, commit = fake_hub.requests
    assert validate.json()["repoType"] == "dataset" and "gradshield:" in validate.json()["content"]
    assert sorted(f["path"] for f in preupload.json()["files"]) == ["README.md", "gradshield-scores.png"]
    assert commit.headers["authorization"] == f"Bearer {fake_hub.token}"
    assert commit.headers["content-type"] == "application/x-ndjson"
    header, *ops = commit.ndjson()
    assert header["key"] == "header" and header["value"]["summary"].startswith(gh.COMMIT_PREFIX)
    uploaded = {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in ops}
    assert uploaded == {
        "README.md": written_card.card_path.read_bytes(),
        "gradshield-scores.png": written_card.image_path.read_bytes(),
    }
    # The repository on the (fake) Hub now holds them; the data file is untouched.
    assert repo.files()["README.md"] == written_card.card_path.read_bytes()
    assert repo.files()["data/train.jsonl"] == b"{}\n"

    # Read back through huggingface_hub's own download path.
    got = hf_hub_download(
        "alice/chats",
        "README.md",
        repo_type="dataset",
        endpoint=fake_hub.url,
        token=fake_hub.token,
        cache_dir=written_card.card_path.parent / "cache",
    )
    assert Path(got).read_bytes() == written_card.card_path.read_bytes()


def test_push_card_as_pull_request(fake_hub, written_card):
    url = push_card(
        "alice/chats",
        written_card.card_path,
        written_card.image_path,
        create_pr=True,
        token=fake_hub.token,
        endpoint=fake_hub.url,
    )
    assert url == f"{fake_hub.url}/datasets/alice/chats/discussions/1"
    preupload = fake_hub.find("POST", r"/preupload/")[0]
    commit = fake_hub.find("POST", r"/commit/")[0]
    assert preupload.query == {"create_pr": ["1"]} and commit.query == {"create_pr": ["1"]}
    repo = fake_hub.repo("alice/chats")
    assert repo.files("main")["README.md"] == b"---\nlicense: mit\n---\nold card\n"  # main untouched
    assert repo.files("refs/pr/1")["README.md"] == written_card.card_path.read_bytes()
    details = HfApi(endpoint=fake_hub.url, token=fake_hub.token).get_discussion_details(
        "alice/chats", 1, repo_type="dataset"
    )
    assert details.is_pull_request and details.title.startswith(gh.COMMIT_PREFIX)


def test_push_unchanged_card_makes_no_commit(fake_hub, written_card):
    first = push_card(
        "alice/chats",
        written_card.card_path,
        written_card.image_path,
        create_pr=False,
        token=fake_hub.token,
        endpoint=fake_hub.url,
    )
    n_commits = len(fake_hub.repo("alice/chats").commits)
    second = push_card(
        "alice/chats",
        written_card.card_path,
        written_card.image_path,
        create_pr=False,
        token=fake_hub.token,
        endpoint=fake_hub.url,
    )
    assert len(fake_hub.repo("alice/chats").commits) == n_commits == 1
    assert second == first  # the URL of the commit that already holds this card
    pre = fake_hub.find("POST", r"/preupload/")[-1]
    assert pre.json()["files"] and fake_hub.find("GET", r"^/api/datasets/alice/chats/revision/main$")
    assert git_blob_oid(written_card.card_path.read_bytes()) == git_blob_oid(
        fake_hub.repo("alice/chats").files()["README.md"]
    )


def test_push_errors_are_clear(fake_hub, written_card, monkeypatch):
    with pytest.raises(HubError, match="HF_TOKEN"):
        push_card(
            "alice/chats",
            written_card.card_path,
            written_card.image_path,
            create_pr=False,
            token="hf_wrong",
            endpoint=fake_hub.url,
        )
    with pytest.raises(HubError, match="does the dataset repository exist"):
        push_card(
            "alice/missing", written_card.card_path, None, create_pr=False, token=fake_hub.token, endpoint=fake_hub.url
        )
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push_card(
            "alice/chats", written_card.card_path, None, create_pr=False, token=fake_hub.token, endpoint=fake_hub.url
        )
    assert fake_hub.repo("alice/chats").commits == []


def test_push_rejects_image_outside_card_dir(tmp_path, written_card):
    with pytest.raises(HubError, match="outside"):
        push_card(
            "alice/chats",
            written_card.card_path,
            tmp_path.parent / "x.png",
            create_pr=False,
            token="t",
            endpoint="http://127.0.0.1:9",
        )


def test_post_discussion_comment(fake_hub, tmp_path):
    d = fake_hub.open_discussion("alice/chats", "Add 200 rows", pull_request=True)
    text = comment_text(_result(tmp_path))
    comment = post_discussion_comment("alice/chats", d.num, text, token=fake_hub.token, endpoint=fake_hub.url)
    assert comment.content == text and comment.author == fake_hub.user and comment.id
    req = fake_hub.find("POST", rf"^/api/datasets/alice/chats/discussions/{d.num}/comment$")
    assert len(req) == 1 and req[0].json() == {"comment": text}
    assert "Content warning" in text and "| `a1a1a1a1a1a1` |" in text
    details = HfApi(endpoint=fake_hub.url).get_discussion_details("alice/chats", d.num, repo_type="dataset")
    assert details.events[-1].content == text
    with pytest.raises(HubError, match="HF_TOKEN"):
        post_discussion_comment("alice/chats", d.num, "x", token="hf_wrong", endpoint=fake_hub.url)
