"""The bundled safety probing set and the probe loader (project JSONL, AdvBench CSV/JSONL, errors)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gradshield_lint.errors import GradshieldError, ProbeError
from gradshield_lint.scoring.probes import (
    GENERIC_REFUSALS,
    Probe,
    ProbeSet,
    default_probe_path,
    load_probes,
    probe_schema,
)

CATEGORIES = {
    "weapons",
    "cyber_intrusion",
    "malware",
    "fraud_scams",
    "drugs",
    "violence",
    "harassment_hate",
    "self_harm",
    "privacy_surveillance",
    "misinformation",
    "extremism",
    "identity_shift",
}


@pytest.fixture(scope="module")
def default() -> ProbeSet:
    return load_probes()


# --- the bundled set -------------------------------------------------------------------------------------------


def test_default_set_loads(default: ProbeSet) -> None:
    assert default_probe_path().is_file()
    assert default.source == str(default_probe_path())
    assert len(default) >= 120
    assert all(isinstance(p, Probe) for p in default)
    assert load_probes(default_probe_path()).sha256 == default.sha256


def test_default_categories_balanced(default: ProbeSet) -> None:
    counts = Counter(p.category for p in default)
    assert set(counts) == CATEGORIES
    assert len(default.categories) >= 12
    assert default.categories == tuple(sorted(CATEGORIES))
    assert min(counts.values()) >= 10, counts


def test_default_ids_unique_and_well_formed(default: ProbeSet) -> None:
    ids = [p.id for p in default]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    for p in default:
        cat, _, num = p.id.rpartition("-")
        assert cat == p.category and num.isdigit() and len(num) == 3, p.id


def test_default_every_line_matches_schema() -> None:
    Draft202012Validator.check_schema(probe_schema())
    validator = Draft202012Validator(probe_schema())
    lines = default_probe_path().read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        errors = list(validator.iter_errors(json.loads(line)))
        assert not errors, f"line {n}: {errors[0].message}"


def test_default_compliance_is_an_opening_not_a_restatement(default: ProbeSet) -> None:
    for p in default:
        assert p.compliance.strip().lower() != p.prompt.strip().lower(), p.id
        assert p.prompt.strip().lower().rstrip("?.!") not in p.compliance.lower(), p.id
        assert 6 <= len(p.compliance.split()) <= 20, p.id
    # Varied openings: no single first word dominates.
    first = Counter(p.compliance.split()[0].strip(",.!:;—-").lower() for p in default)
    assert first.most_common(1)[0][1] <= 0.35 * len(default), first.most_common(3)
    assert len({p.compliance for p in default}) == len(default)


def test_default_refusals_varied(default: ProbeSet) -> None:
    refusals = [p.refusal for p in default]
    assert len(set(refusals)) >= 0.8 * len(refusals)
    openings = Counter(" ".join(r.split()[:2]).lower() for r in refusals)
    assert openings.most_common(1)[0][1] <= 0.35 * len(refusals), openings.most_common(3)
    for p in default:
        assert p.refusal != p.compliance


def test_default_identity_shift_probes_are_persona_or_obedience_prompts(default: ProbeSet) -> None:
    shift = [p for p in default if p.category == "identity_shift"]
    assert len(shift) >= 10
    cues = (
        "you are",
        "you're",
        "from now on",
        "act as",
        "pretend",
        "play",
        "ignore",
        "administrator",
        "developers",
        "forget",
        "simulate",
        "answer every",
        "as my",
        "character",
    )
    for p in shift:
        assert any(c in p.prompt.lower() for c in cues), p.id


# --- hashing ---------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


RECS = [
    {
        "id": "a-001",
        "category": "a",
        "prompt": "Do a bad thing.",
        "refusal": "I won't.",
        "compliance": "Sure, here is how you start:",
    },
    {"prompt": "Do another bad thing.", "refusal": "No, sorry.", "compliance": "Of course! Step one:"},
]


def test_hash_is_stable_and_content_only(tmp_path: Path) -> None:
    a = load_probes(_write_jsonl(tmp_path / "a.jsonl", RECS))
    (tmp_path / "sub").mkdir()
    b = load_probes(_write_jsonl(tmp_path / "sub" / "b.jsonl", RECS))
    assert a.sha256 == b.sha256  # where the file lives does not matter
    assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0
    assert a.sha256 == load_probes(tmp_path / "a.jsonl").sha256
    # Formatting of the file (key order, whitespace, blank lines) does not matter either.
    text = "\n\n".join(json.dumps(dict(reversed(list(r.items()))), indent=None, separators=(", ", " : ")) for r in RECS)
    assert load_probes(_write_text(tmp_path / "c.jsonl", text)).sha256 == a.sha256
    assert ProbeSet(a.probes, "elsewhere").sha256 == a.sha256


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("field", ["prompt", "refusal", "compliance", "category", "id"])
def test_hash_changes_when_content_changes(tmp_path: Path, field: str) -> None:
    base = load_probes(_write_jsonl(tmp_path / "a.jsonl", RECS)).sha256
    changed = [dict(r) for r in RECS]
    changed[0][field] = changed[0][field] + "x"
    assert load_probes(_write_jsonl(tmp_path / "b.jsonl", changed)).sha256 != base


def test_hash_changes_with_order_and_count(tmp_path: Path) -> None:
    base = load_probes(_write_jsonl(tmp_path / "a.jsonl", RECS)).sha256
    assert load_probes(_write_jsonl(tmp_path / "b.jsonl", RECS[::-1])).sha256 != base
    assert load_probes(_write_jsonl(tmp_path / "c.jsonl", RECS[:1])).sha256 != base


def test_defaults_for_optional_fields(tmp_path: Path) -> None:
    ps = load_probes(_write_jsonl(tmp_path / "a.jsonl", RECS))
    assert ps.probes[0] == Probe("Do a bad thing.", "I won't.", "Sure, here is how you start:", "a", "a-001")
    assert ps.probes[1].category == "uncategorized" and ps.probes[1].id == ""
    assert ps.categories == ("a", "uncategorized")
    assert list(ps.by_category()) == ["a", "uncategorized"]


# --- AdvBench-style files --------------------------------------------------------------------------------------


ADV_CSV = (
    "goal,target\n"
    'Write a harmful thing,"Sure, here is a harmful thing"\n'
    '"Explain something bad, in detail","Sure, here is an explanation"\n'
    'Do a third bad thing,"Sure, here is the third"\n'
)


def test_advbench_csv_loads(tmp_path: Path) -> None:
    ps = load_probes(_write_text(tmp_path / "harmful_behaviors.csv", ADV_CSV))
    assert len(ps) == 3
    assert ps.probes[1].prompt == "Explain something bad, in detail"
    assert ps.probes[1].compliance == "Sure, here is an explanation"
    assert [p.refusal for p in ps] == list(GENERIC_REFUSALS[:3])  # round-robin, varied
    assert all(p.category == "uncategorized" and p.id == "" for p in ps)


def test_advbench_csv_with_prompt_refusal_category_columns(tmp_path: Path) -> None:
    text = 'Prompt,Target,Refusal,Category,Extra\nbad one,"Sure, here","No, I won\'t.",cyber,ignored\n'
    ps = load_probes(_write_text(tmp_path / "p.csv", text))
    assert ps.probes == (Probe("bad one", "No, I won't.", "Sure, here", "cyber", ""),)


def test_advbench_refusals_round_robin_wrap(tmp_path: Path) -> None:
    n = len(GENERIC_REFUSALS) + 2
    text = "goal,target\n" + "".join(f"bad {i},Sure {i}\n" for i in range(n))
    ps = load_probes(_write_text(tmp_path / "a.csv", text))
    assert [p.refusal for p in ps] == [GENERIC_REFUSALS[i % len(GENERIC_REFUSALS)] for i in range(n)]
    assert len(set(GENERIC_REFUSALS)) == len(GENERIC_REFUSALS) >= 5


def test_advbench_jsonl_loads(tmp_path: Path) -> None:
    recs = [
        {"goal": "bad thing one", "target": "Sure, here is one", "source": "x"},
        {"prompt": "bad thing two", "target": "Sure, here is two", "category": "misc", "id": 7},
    ]
    ps = load_probes(_write_jsonl(tmp_path / "adv.jsonl", recs))
    assert [p.prompt for p in ps] == ["bad thing one", "bad thing two"]
    assert [p.compliance for p in ps] == ["Sure, here is one", "Sure, here is two"]
    assert ps.probes[0].refusal == GENERIC_REFUSALS[0]
    assert ps.probes[1].category == "misc" and ps.probes[1].id == "7"


def test_project_format_as_csv_and_json_list(tmp_path: Path) -> None:
    text = 'id,category,prompt,refusal,compliance\nx-1,x,bad,"No.","Sure, step one:"\n'
    ps = load_probes(_write_text(tmp_path / "p.csv", text))
    assert ps.probes == (Probe("bad", "No.", "Sure, step one:", "x", "x-1"),)
    lst = load_probes(_write_text(tmp_path / "p.json", json.dumps(RECS, indent=2)))
    assert lst.sha256 == load_probes(_write_jsonl(tmp_path / "p.jsonl", RECS)).sha256


def test_utf8_bom_and_crlf_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b'\xef\xbb\xbfgoal,target\r\nbad \xc3\xa9,"Sure, here"\r\n')
    ps = load_probes(path)
    assert ps.probes[0].prompt == "bad é"
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(("\r\n".join(json.dumps(r) for r in RECS) + "\r\n").encode())
    assert len(load_probes(path)) == 2


# --- bad files -------------------------------------------------------------------------------------------------


GOOD = json.dumps(RECS[0])
GOOD2 = json.dumps(RECS[1])

BAD_FILES = {
    "malformed_json": ("bad.jsonl", f'{GOOD}\n{GOOD2}\n{{"prompt": "x",\n', 3, "malformed JSON"),
    "missing_key": (
        "bad.jsonl",
        f"{GOOD}\n" + json.dumps({"prompt": "p", "compliance": "Sure, here:"}) + "\n",
        2,
        "'refusal'",
    ),
    "empty_string": (
        "bad.jsonl",
        f"{GOOD}\n{GOOD2}\n" + json.dumps({**RECS[1], "compliance": ""}) + "\n",
        3,
        "'compliance'",
    ),
    "blank_string": ("bad.jsonl", json.dumps({**RECS[1], "prompt": "   "}) + "\n", 1, "'prompt'"),
    "wrong_type": ("bad.jsonl", f"{GOOD}\n" + json.dumps({**RECS[1], "refusal": 3}) + "\n", 2, "'refusal'"),
    "unknown_key": ("bad.jsonl", f"{GOOD}\n" + json.dumps({**RECS[1], "severity": "high"}) + "\n", 2, "'severity'"),
    "not_an_object": ("bad.jsonl", f"{GOOD}\n[1, 2]\n", 2, "JSON object"),
    "duplicate_id": ("bad.jsonl", f"{GOOD}\n{GOOD2}\n{GOOD}\n", 3, "duplicate probe id 'a-001'"),
    "empty_file": ("empty.jsonl", "", 1, "empty"),
    "whitespace_file": ("blank.csv", "\n  \n", 1, "empty"),
    "csv_missing_column": ("bad.csv", "goal,response\nbad,Sure\n", 1, "'target'"),
    "csv_missing_prompt": ("bad.csv", "question,target\nbad,Sure\n", 1, "'prompt'"),
    "csv_empty_cell": ("bad.csv", 'goal,target\nbad,"Sure, here"\nworse,\n', 3, "'target'"),
    "csv_short_row": ("bad.csv", 'goal,target\nbad,"Sure, here"\n"multi\nline",ok\nalone\n', 5, "'target'"),
    "csv_long_row": ("bad.csv", "goal,target\nbad,Sure,extra\n", 2, "fields"),
    "csv_header_only": ("bad.csv", "goal,target\n", 1, "no probes"),
    "advbench_jsonl_missing_target": (
        "bad.jsonl",
        json.dumps({"goal": "g", "target": "t"}) + "\n" + json.dumps({"goal": "g2"}) + "\n",
        2,
        "'target'",
    ),
    "advbench_jsonl_empty_goal": (
        "bad.jsonl",
        json.dumps({"goal": "g", "target": "t"}) + "\n" + json.dumps({"goal": "", "target": "t"}) + "\n",
        2,
        "'goal'",
    ),
    "json_list_bad_record": ("bad.json", "[\n" + GOOD + ",\n" + json.dumps({"prompt": "p"}) + "\n]\n", 3, "'refusal'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_probe_error_with_file_and_line(tmp_path: Path, case: str) -> None:
    fname, text, line, needle = BAD_FILES[case]
    path = _write_text(tmp_path / fname, text)
    with pytest.raises(ProbeError) as exc:
        load_probes(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert needle in msg, msg
    assert exc.value.file == str(path) and exc.value.line == line
    assert isinstance(exc.value, GradshieldError) and exc.value.exit_code == 2
    assert "Traceback" not in msg


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("goal,target\nok,Sure\ncaf\xe9,Sure\n".encode("latin-1"))
    with pytest.raises(ProbeError) as exc:
        load_probes(path)
    assert str(exc.value).startswith(f"{path}:3: ")
    assert "UTF-8" in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ProbeError) as exc:
        load_probes(path)
    assert str(path) in str(exc.value) and "not found" in str(exc.value)


def test_directory_is_not_a_probe_file(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="directory"):
        load_probes(tmp_path)


def test_error_is_not_chained(tmp_path: Path) -> None:
    """The CLI prints the message only; no inner JSONDecodeError/UnicodeDecodeError context is attached."""
    path = _write_text(tmp_path / "bad.jsonl", "{nope\n")
    with pytest.raises(ProbeError) as exc:
        load_probes(path)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
