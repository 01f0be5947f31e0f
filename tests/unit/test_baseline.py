"""The stored baseline: round trip, deterministic bytes, clean merges, bad files, fingerprints."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from gradshield_lint.errors import BaselineError
from gradshield_lint.lint.baseline import (
    SCHEMA_PATH,
    Baseline,
    Fingerprint,
    KnownIds,
    Recorded,
    RowDiff,
    accept,
    check_compatible,
    diff_rows,
    dumps_baseline,
    make_baseline,
    read_baseline,
    round_score,
    update_scores,
    upgrade_ids,
    write_baseline,
)
from gradshield_lint.lint.threshold import ThresholdResult, find_threshold

FP = Fingerprint(
    model="HuggingFaceTB/SmolLM2-135M-Instruct",
    model_revision="12fd25f77366fa6b3b4b768ec3050bf629380bac",
    model_hash="sha256:" + "ab" * 32,
    adapter="gradshield-safety-v1",
    proxy="refusal_margin",
    probe_set="sha256:" + "cd" * 32,
    params="all",
    max_length=2048,
    chat_template="sha256:" + "ef" * 32,
    loss_reduction="mean",
    normalize="none",
)
REC = Recorded(method="jvp", dtype="float32", device="cpu")


def ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{v:016x}" for v in rng.integers(0, 2**63, size=n, dtype=np.int64)]


def sample(n: int = 200, seed: int = 0) -> Baseline:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1e-3, n)
    scores = dict(zip(ids(n, seed), values.tolist()))
    return make_baseline(FP, scores, find_threshold(values), REC, {next(iter(scores)): "reviewed: a refusal"})


# ------------------------------------------------------------------------------------------------ round trip, format


def test_round_trip(tmp_path):
    b = sample()
    p = tmp_path / "baseline.json"
    write_baseline(p, b)
    r = read_baseline(p)
    assert r.fingerprint == FP and r.recorded == REC
    assert r.scores == b.scores and r.accepted == b.accepted
    assert r.threshold.method == b.threshold.method and r.threshold.criterion == b.threshold.criterion
    assert r.threshold.iterations == b.threshold.iterations
    assert r.threshold.value == round_score(b.threshold.value)
    assert r.threshold.details == {k: round_score(v) for k, v in b.threshold.details.items()}
    write_baseline(tmp_path / "again.json", r)
    assert (tmp_path / "again.json").read_bytes() == p.read_bytes()


def test_scores_are_rounded_to_seven_significant_digits():
    raw = {"aa": 1.23456789e-5, "bb": 3.0, "cc": -0.0, "dd": 123456789.0}
    b = make_baseline(FP, raw, ThresholdResult(1.0, "fixed", "fixed", 0))
    assert b.scores == {"aa": 1.234568e-5, "bb": 3.0, "cc": -0.0, "dd": 123456800.0}
    text = dumps_baseline(b)
    assert '"aa": 1.234568e-05,' in text and '"bb": 3.0,' in text and '"dd": 1.234568e+08\n' in text


def test_deterministic_bytes_whatever_the_insertion_order(tmp_path):
    b = sample()
    shuffled = dict(reversed(list(b.scores.items())))
    b2 = Baseline(
        Fingerprint(**dict(reversed(list(FP.to_dict().items())))),
        REC,
        replace(b.threshold, details=dict(reversed(list(b.threshold.details.items())))),
        shuffled,
        dict(b.accepted),
    )
    write_baseline(tmp_path / "a.json", b)
    write_baseline(tmp_path / "b.json", b)
    write_baseline(tmp_path / "c.json", b2)
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_file_layout_is_merge_friendly_and_matches_the_full_schema(tmp_path):
    b = sample(50)
    p = tmp_path / "baseline.json"
    write_baseline(p, b)
    text = p.read_text(encoding="utf-8")
    doc = json.loads(text)
    Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)  # the whole file, scores included
    assert list(doc) == ["version", "fingerprint", "recorded", "threshold", "accepted", "scores"]
    lines = text.splitlines()
    start = lines.index('  "scores": {')
    assert lines[-2:] == ["  }", "}"]
    score_lines = lines[start + 1 : -2]
    assert len(score_lines) == 50  # one score per line
    keys = [ln.split('"')[1] for ln in score_lines]
    assert keys == sorted(keys)
    assert text.endswith("}\n") and "\r" not in text
    for word in ("time", "date", "line", str(tmp_path)):
        assert word not in text.replace("chat_template", "")


def test_git_merge_file_of_two_branches_adding_rows_has_no_conflict(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    base = sample(300)
    all_ids = sorted(base.scores)
    # New rows that sort into different stretches of the file (as content hashes do), not next to each other.
    ours_new = {all_ids[40][:-1] + "x": 0.5, all_ids[200][:-1] + "x": -0.25}
    theirs_new = {all_ids[100][:-1] + "y": 0.125, all_ids[250][:-1] + "y": 1.5e-4}
    ours = update_scores(base, ours_new)
    theirs = accept(update_scores(base, theirs_new), all_ids[7], "false positive: a poem")
    for name, b in (("base", base), ("ours", ours), ("theirs", theirs)):
        write_baseline(tmp_path / f"{name}.json", b)
    merged = subprocess.run(
        ["git", "merge-file", "-p", *(str(tmp_path / f"{n}.json") for n in ("ours", "base", "theirs"))],
        capture_output=True,
        text=True,
    )
    assert merged.returncode == 0, merged.stdout[:2000]
    (tmp_path / "merged.json").write_text(merged.stdout, encoding="utf-8")
    m = read_baseline(tmp_path / "merged.json")
    assert m.scores == {**base.scores, **ours_new, **theirs_new}
    assert m.accepted == {**base.accepted, all_ids[7]: "false positive: a poem"}
    union = accept(update_scores(base, {**ours_new, **theirs_new}), all_ids[7], "false positive: a poem")
    assert merged.stdout == dumps_baseline(union)  # the merge is exactly what a single update would have written


def test_infinite_threshold_is_refused_and_non_finite_details_round_trip(tmp_path):
    """A threshold of +inf flags nothing: such a baseline is never written (issue 12; tests/test_gate.py covers
    reading one). Non-finite `details` (informational) are written as null and read back as NaN."""
    b = make_baseline(FP, {}, ThresholdResult(math.inf, "sigma", "distribution", 0, {"n": 0.0, "lrt": math.nan}), REC)
    with pytest.raises(BaselineError, match="threshold is inf"):
        write_baseline(tmp_path / "b.json", b)
    assert not (tmp_path / "b.json").exists()
    b = make_baseline(FP, {}, ThresholdResult(0.5, "sigma", "distribution", 0, {"n": 0.0, "lrt": math.nan}), REC)
    write_baseline(tmp_path / "b.json", b)
    r = read_baseline(tmp_path / "b.json")
    assert r.threshold.value == 0.5 and math.isnan(r.threshold.details["lrt"]) and r.scores == {}


# ------------------------------------------------------------------------------------------------ bad files


def write_text(tmp_path: Path, text: str, name: str = "baseline.json") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def expect_error(path: Path, *fragments: str, line: int | None = None) -> BaselineError:
    with pytest.raises(BaselineError) as ei:
        read_baseline(path)
    msg = str(ei.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    if line is not None:
        assert ei.value.line == line and f"{path}:{line}:" in msg
    assert ei.value.exit_code == 2
    return ei.value


def test_truncated_baseline_names_file_and_line(tmp_path):
    good = dumps_baseline(sample(100))
    lines = good.splitlines(keepends=True)
    cut = "".join(lines[:60])[:-7]  # in the middle of a score line
    p = write_text(tmp_path, cut)
    err = expect_error(p, "not valid JSON", "truncated")
    assert err.line is not None and 55 <= err.line <= 61


def test_corrupt_baseline_names_file_and_line(tmp_path):
    lines = dumps_baseline(sample(100)).splitlines(keepends=True)
    lines[30] = lines[30].replace(":", " ", 1)
    expect_error(write_text(tmp_path, "".join(lines)), "not valid JSON", line=31)
    expect_error(write_text(tmp_path, ""), "not valid JSON", line=1)
    expect_error(write_text(tmp_path, "[1, 2]"), "expected a JSON object", line=1)
    p = tmp_path / "binary.json"
    p.write_bytes(b'{\n "version": 1,\n "x": "\xff\xfe"\n}\n')
    expect_error(p, "not UTF-8", line=3)


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.json", "not found", "baseline create")
    (tmp_path / "dir.json").mkdir()
    expect_error(tmp_path / "dir.json", "directory")


def test_schema_violations_name_the_key_path(tmp_path):
    doc = json.loads(dumps_baseline(sample(20)))
    some_id = next(iter(doc["scores"]))

    def bad(mutate, *fragments, line=None):
        d = json.loads(json.dumps(doc))
        mutate(d)
        expect_error(write_text(tmp_path, json.dumps(d, indent=2)), *fragments, line=line)

    bad(lambda d: d["fingerprint"].__setitem__("max_length", "long"), "fingerprint/max_length", "'long'")
    bad(lambda d: d["fingerprint"].pop("probe_set"), "fingerprint", "probe_set")
    bad(lambda d: d.pop("threshold"), "'threshold' is a required property")
    bad(lambda d: d.pop("scores"), "'scores' is a required property")
    bad(lambda d: d["threshold"].__setitem__("method", "median"), "threshold/method")
    bad(lambda d: d["accepted"].__setitem__(some_id, ""), f"accepted/{some_id}")
    bad(lambda d: d.__setitem__("extra", 1), "extra")
    bad(lambda d: d["scores"].__setitem__(some_id, "0.5"), f"scores/{some_id}", "not a number")
    bad(lambda d: d["scores"].__setitem__(some_id, None), f"scores/{some_id}")
    bad(lambda d: d["scores"].__setitem__("not a row id!", 1.0), "scores", "invalid row id")
    bad(lambda d: d.__setitem__("scores", [1, 2]), "scores")


def test_other_versions(tmp_path):
    doc = json.loads(dumps_baseline(sample(5)))
    doc["version"] = 2
    expect_error(write_text(tmp_path, json.dumps(doc, indent=2)), "version 2", "newer", "upgrade", line=2)
    doc["version"] = "1"
    expect_error(write_text(tmp_path, json.dumps(doc, indent=2)), "unsupported baseline format version")


def test_nan_and_duplicate_rows_are_rejected_with_their_line(tmp_path):
    lines = dumps_baseline(sample(30)).splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if ln.startswith('    "') and i > 40)
    nan_lines = list(lines)
    nan_lines[i] = nan_lines[i].split(": ")[0] + ": NaN,\n"
    expect_error(write_text(tmp_path, "".join(nan_lines)), "NaN", line=i + 1)
    dup = list(lines)
    dup.insert(i + 1, dup[i])  # what a union merge of two branches that scored the same row differently leaves
    expect_error(write_text(tmp_path, "".join(dup)), "appears more than once", f"lines {i + 1}, {i + 2}", line=i + 2)


def test_integral_scores_written_by_hand_read_as_floats(tmp_path):
    doc = json.loads(dumps_baseline(sample(5)))
    k = next(iter(doc["scores"]))
    doc["scores"][k] = 2
    r = read_baseline(write_text(tmp_path, json.dumps(doc)))
    assert r.scores[k] == 2.0 and isinstance(r.scores[k], float)


# ------------------------------------------------------------------------------------------------ writing safely


def test_write_is_atomic_and_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "baseline.json"
    write_baseline(p, sample(10))
    before = p.read_bytes()
    with pytest.raises(BaselineError, match="not a finite number"):
        write_baseline(p, replace(sample(10), scores={"aa": math.nan}))
    assert p.read_bytes() == before

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(BaselineError) as ei:
        write_baseline(p, sample(20, seed=1))
    assert str(p) in str(ei.value) and "No space left" in str(ei.value)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["baseline.json"]  # no temporary file left behind


def test_write_keeps_file_mode(tmp_path):
    p = tmp_path / "baseline.json"
    write_baseline(p, sample(5))
    os.chmod(p, 0o640)
    write_baseline(p, sample(6))
    assert p.stat().st_mode & 0o777 == 0o640


def test_invalid_rows_cannot_be_stored():
    with pytest.raises(BaselineError, match="not a finite number"):
        make_baseline(FP, {"aa": math.inf}, ThresholdResult(1.0, "fixed", "fixed", 0))
    with pytest.raises(BaselineError, match="invalid row id"):
        make_baseline(FP, {"a b": 1.0}, ThresholdResult(1.0, "fixed", "fixed", 0))
    with pytest.raises(BaselineError, match="not a finite number"):
        update_scores(sample(5), {"aa": "0.5"})  # type: ignore[dict-item]
    with pytest.raises(BaselineError, match="reason"):
        accept(sample(5), "aa", "   ")


# ------------------------------------------------------------------------------------------------ fingerprints


def test_fingerprint_mismatch_lists_the_fields(tmp_path):
    b = sample(5)
    other = replace(FP, model="meta-llama/Llama-3.2-1B-Instruct", max_length=4096)
    assert FP.differences(FP) == []
    diffs = FP.differences(other)
    assert diffs == [
        "model: HuggingFaceTB/SmolLM2-135M-Instruct → meta-llama/Llama-3.2-1B-Instruct",
        "max_length: 2048 → 4096",
    ]
    p = tmp_path / "gradshield-baseline.json"
    with pytest.raises(BaselineError) as ei:
        check_compatible(b, other, p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: baseline made with model: ")
    assert "max_length: 2048 → 4096" in msg and "gradshield-lint baseline update --rescore" in msg
    long_hash = replace(FP, probe_set="sha256:" + "00" * 32)
    assert FP.differences(long_hash)[0].startswith("probe_set: sha256:cdcd")
    assert len(FP.differences(long_hash)[0]) < 60  # long hashes are shortened


def test_recorded_method_dtype_device_do_not_make_scores_incomparable():
    b = replace(sample(5), recorded=Recorded(method="fd", dtype="bfloat16", device="cuda"))
    check_compatible(b, FP)  # does not raise
    assert b.recorded.differences(REC) == ["method: fd → jvp", "dtype: bfloat16 → float32", "device: cuda → cpu"]


def test_recorded_extra_facts_round_trip(tmp_path):
    b = replace(sample(5), recorded=Recorded("jvp", "float32", "cpu", {"torch": "2.13.0", "batch_size": 8}))
    write_baseline(tmp_path / "b.json", b)
    assert read_baseline(tmp_path / "b.json").recorded == b.recorded


# ------------------------------------------------------------------------------------------------ rows


def test_diff_rows_update_and_accept():
    fixed = ThresholdResult(2.5, "fixed", "fixed", 0)
    b = make_baseline(FP, {"aa": 1.0, "bb": 2.0, "cc": 3.0}, fixed, REC, {"cc": "ok", "zz": "ok too"})
    d = diff_rows(b, ["dd", "bb", "aa", "dd", "ee"])
    assert d == RowDiff(new=["dd", "ee"], known=["bb", "aa"], removed=["cc"])
    u = update_scores(b, {"dd": 0.123456789, "ee": 4.0}, set(d.removed), threshold=replace(fixed, value=3.5))
    assert u.scores == {"aa": 1.0, "bb": 2.0, "dd": 0.1234568, "ee": 4.0}
    assert u.accepted == {"zz": "ok too"}  # the removed row's acceptance goes with it
    assert u.threshold.value == 3.5
    assert b.scores == {"aa": 1.0, "bb": 2.0, "cc": 3.0}  # the original is unchanged
    assert update_scores(b, {"aa": 9.0}).threshold == b.threshold
    a = accept(u, "ff", "  reviewed: quoting a refusal  ")
    assert a.accepted == {"zz": "ok too", "ff": "reviewed: quoting a refusal"}
    assert "ff" not in a.scores and u.accepted == {"zz": "ok too"}


def _full(prefix: str, fill: str) -> str:
    return prefix + fill * (64 - len(prefix))


def test_a_row_sharing_the_first_16_digits_of_a_known_id_is_new():
    """Ids are the full sha256: a row whose id shares its first 16 digits with a known row (what a 2^32-try brute
    force finds) is new, and gets scored and judged."""
    fixed = ThresholdResult(2.5, "fixed", "fixed", 0)
    known, twin = _full("0123456789abcdef", "a"), _full("0123456789abcdef", "b")
    b = make_baseline(FP, {known: 1.0}, fixed, REC)
    assert diff_rows(b, [known, twin]) == RowDiff(new=[twin], known=[known], removed=[])
    assert twin not in KnownIds(b) and known in KnownIds(b)


def test_old_16_digit_ids_match_the_row_they_start_and_are_upgraded():
    """A baseline from before issue 33 holds the first 16 digits of each id: such an id matches the one row whose
    full id starts with it, and `upgrade_ids` replaces it (scores and accepted) with the full id. Two rows that
    start with the same old id: neither is matched (a collision may be made), both are new. Old ids of rows not
    given, and ids that are not 16 hex digits, stay."""
    fixed = ThresholdResult(2.5, "fixed", "fixed", 0)
    a, c, d = _full("aaaaaaaaaaaaaaaa", "1"), _full("cccccccccccccccc", "1"), _full("dddddddddddddddd", "1")
    c2 = _full("cccccccccccccccc", "2")
    old = make_baseline(
        FP,
        {a[:16]: 1.0, c[:16]: 3.0, d[:16]: 4.0, "row-7": 5.0},
        fixed,
        REC,
        {a[:16]: "reviewed", "eeeeeeeeeeeeeeee": "reviewed too"},
    )
    known = KnownIds(old)
    assert a in known and d in known and "row-7" in known and _full("ffffffffffffffff", "1") not in known
    new = upgrade_ids(old, [a, c, c2, "row-7"])
    assert new.scores == {a: 1.0, c[:16]: 3.0, d[:16]: 4.0, "row-7": 5.0}
    assert new.accepted == {a: "reviewed", "eeeeeeeeeeeeeeee": "reviewed too"}
    assert diff_rows(new, [a, c, c2]) == RowDiff(new=[c, c2], known=[a], removed=sorted([c[:16], d[:16], "row-7"]))
    # update drops the rows that are gone, the collided old id among them; the file then holds full ids
    u = update_scores(new, {c: 3.5, c2: 9.0}, set(diff_rows(new, [a, c, c2]).removed))
    assert sorted(u.scores) == sorted([a, c, c2])
    assert upgrade_ids(u, [a, c]) is u  # nothing old left: the baseline itself
    # an entry already under the full id wins over its old form
    both = make_baseline(FP, {a: 1.5, a[:16]: 1.0}, fixed, REC)
    assert upgrade_ids(both, [a]).scores == {a: 1.5}


def test_a_large_baseline_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    n = 20_000
    scores = dict(zip(ids(n, 3), rng.standard_t(4, n).tolist()))
    b = make_baseline(FP, scores, find_threshold(list(scores.values())), REC)
    write_baseline(tmp_path / "big.json", b)
    assert read_baseline(tmp_path / "big.json").scores == b.scores
    assert (tmp_path / "big.json").stat().st_size < 64 * n  # ~38 bytes a row


def test_crlf_checkout_reads_the_same(tmp_path):
    """A Windows checkout with core.autocrlf turns \\n into \\r\\n; the file still reads (and is rewritten with \\n)."""
    b = sample(10)
    p = tmp_path / "baseline.json"
    p.write_bytes(dumps_baseline(b).replace("\n", "\r\n").encode("utf-8"))
    assert read_baseline(p).scores == b.scores
