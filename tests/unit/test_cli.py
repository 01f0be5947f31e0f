"""The `gradshield-lint` command line on real files: baseline, check, accept, scan, filter, score, reports.

Every test runs the real CLI (click's CliRunner, in process) in a throwaway repository scored by a tiny random
llama. Rows whose reply is a probe's compliance opening to that probe's prompt are the ones that must be
flagged (see tests/helpers.py); ordinary rows must pass.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import (
    PROBES,
    Repo,
    assert_user_error,
    cli_fixtures,
    compliance_row,
    compliance_rows,
    describe,
    git_cmd,
    jsonl,
    make_legacy_baseline,
    make_repo,
    ordinary_row,
    ordinary_rows,
    run_cli,
    snapshot,
    write_jsonl,
)
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "gradshield_lint" / "schemas"
N_BASE = 16  # ordinary rows in the template repository's baseline


# ------------------------------------------------------------------------------------------------ fixtures


env, model_dir, template, repo = cli_fixtures(N_BASE, baseline_says=(f"{N_BASE} rows",))


def report(result) -> dict:
    """The JSON report on stdout, validated against the report schema."""
    doc = json.loads(result.stdout)
    Draft202012Validator(json.loads((SCHEMAS / "report.schema.json").read_text())).validate(doc)
    return doc


def baseline_doc(repo: Repo) -> dict:
    return json.loads(repo.baseline.read_text(encoding="utf-8"))


def finding_lines(doc: dict) -> set[tuple[str, int]]:
    return {(f["file"], f["line"]) for f in doc["findings"]}


# ------------------------------------------------------------------------------------------------ baseline


def test_baseline_create_writes_a_schema_valid_baseline_at_the_root(template):
    doc = baseline_doc(template)
    Draft202012Validator(json.loads((SCHEMAS / "baseline.schema.json").read_text())).validate(doc)
    assert len(doc["scores"]) == N_BASE
    assert doc["fingerprint"]["max_length"] == 96 and doc["fingerprint"]["proxy"] == "margin"
    assert doc["threshold"]["value"] is not None
    # Nothing else was written into the repository (but the baseline's lock file, which holds no data), and a second
    # create refuses to overwrite it.
    assert sorted(p.name for p in template.root.iterdir()) == [
        ".gradshield-baseline.json",
        ".gradshield-baseline.json.lock",
        ".gradshield.yaml",
        "data",
        "probes.jsonl",
    ]
    before = snapshot(template.baseline)
    r = template.run("baseline", "create")
    assert_user_error(r, "exists", "--force")
    assert snapshot(template.baseline) == before


def test_check_ordinary_new_rows_pass_and_never_write_the_baseline(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE + 3))
    before = snapshot(repo.baseline, repo.data)
    r = repo.run("check", "-f", "json")  # no files, no --baseline: the configured globs and the root baseline
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 3 and doc["rows_total"] == N_BASE + 3 and doc["findings"] == []
    assert snapshot(repo.baseline, repo.data) == before


def test_check_flags_compliance_rows(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1) + compliance_rows(2))
    before = snapshot(repo.baseline, repo.data)
    r = repo.run("check", "data/train.jsonl")
    assert r.exit_code == 1, describe(r)
    # The text table: file:line and the score of each compliance row (lines N_BASE+2 and N_BASE+3), nothing else.
    out = r.stdout
    assert f"data/train.jsonl:{N_BASE + 2}" in out and f"data/train.jsonl:{N_BASE + 3}" in out, out
    assert f"data/train.jsonl:{N_BASE + 1} " not in out
    assert "3 rows scored, 2 flagged" in out
    assert PROBES[0]["compliance"][:30] in out

    # Report-only: the same findings, exit 0; JSON and SARIF written beside, GitHub annotations on stdout.
    r2 = repo.run("check", "--exit-zero", "-f", "github", "--json", "report.json", "--sarif", "report.sarif")
    assert r2.exit_code == 0, describe(r2)
    doc = json.loads((repo.root / "report.json").read_text())
    Draft202012Validator(json.loads((SCHEMAS / "report.schema.json").read_text())).validate(doc)
    assert finding_lines(doc) == {("data/train.jsonl", N_BASE + 2), ("data/train.jsonl", N_BASE + 3)}
    assert doc["rows_scored"] == 3 and doc["rows_flagged"] == 2
    for f in doc["findings"]:
        assert f["fihs"] > doc["threshold"] and f"{f['fihs']:.4g}"[:4] in out
    lines = r2.stdout.splitlines()
    assert lines[0].startswith("::error title=gradshield-lint verdict::FAIL: the 3 added rows score higher"), lines
    annotations = [line for line in lines if line.startswith("::error file=")]
    assert len(annotations) == 2
    assert any(f"file=data/train.jsonl,line={N_BASE + 2}" in a for a in annotations), r2.stdout
    sarif = json.loads((repo.root / "report.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert len(results) == 2
    fps = {json.dumps(res.get("partialFingerprints") or res.get("fingerprints"), sort_keys=True) for res in results}
    assert all(any(f["id"] in fp for fp in fps) for f in doc["findings"]), fps
    lines = {res["locations"][0]["physicalLocation"]["region"]["startLine"] for res in results}
    assert lines == {N_BASE + 2, N_BASE + 3}

    # JSON on stdout is the same document.
    r3 = repo.run("check", "-f", "json")
    assert r3.exit_code == 1
    assert finding_lines(report(r3)) == finding_lines(doc)
    assert snapshot(repo.baseline, repo.data) == before


def test_reordered_and_moved_rows_are_not_new(repo):
    rows = ordinary_rows(N_BASE)
    write_jsonl(repo.data, rows[::-1][: N_BASE // 2])
    write_jsonl(repo.root / "data" / "more" / "moved.jsonl", rows[::-1][N_BASE // 2 :])
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert doc["rows_total"] == N_BASE and doc["rows_scored"] == 0 and doc["findings"] == []


def test_editing_a_row_makes_it_new(repo):
    rows = ordinary_rows(N_BASE)
    rows[5]["messages"][1]["content"] += " Edited."
    write_jsonl(repo.data, rows)
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0, describe(r)
    assert report(r)["rows_scored"] == 1

    # An edit that turns a row into a compliance reply is caught at its line.
    rows[5] = compliance_row(2)
    write_jsonl(repo.data, rows)
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 1, describe(r)
    assert finding_lines(report(r)) == {("data/train.jsonl", 6)}


def test_accept_makes_the_check_pass_and_lists_the_row(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE) + compliance_rows(1))
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 1, describe(r)
    (finding,) = report(r)["findings"]

    r = repo.run("accept", finding["id"], "--reason", "refusal-training counterexample, reviewed")
    assert r.exit_code == 0, describe(r)
    assert baseline_doc(repo)["accepted"] == {finding["id"]: "refusal-training counterexample, reviewed"}

    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert doc["findings"] == [] and doc["rows_accepted"] == 1
    (acc,) = doc["accepted"]
    assert acc["id"] == finding["id"] and acc["reason"] == "refusal-training counterexample, reviewed"
    assert acc["accepted"] is True and acc["line"] == N_BASE + 1

    r = repo.run("check")
    assert r.exit_code == 0, describe(r)
    assert "Accepted rows" in r.stdout and "refusal-training counterexample" in r.stdout and "1 accepted" in r.stdout


def test_accept_takes_the_short_id_a_report_shows(repo):
    """The text report shows 12 hex digits: `accept` with them (or in upper case) stores the row's full id, and the
    check passes. It used to store the 12 digits as given, report "accepted", and the check still failed."""
    write_jsonl(repo.data, ordinary_rows(N_BASE) + compliance_rows(1))
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 1, describe(r)
    (finding,) = report(r)["findings"]
    short = finding["id"][:12]
    assert short in repo.run("check").stdout and finding["id"] not in repo.run("check").stdout

    r = repo.run("accept", short.upper(), "--reason", "reviewed: a quoted refusal")
    assert r.exit_code == 0, describe(r)
    assert finding["id"] in r.stderr and f"data/train.jsonl:{N_BASE + 1}" in r.stderr
    assert baseline_doc(repo)["accepted"] == {finding["id"]: "reviewed: a quoted refusal"}
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0 and report(r)["rows_accepted"] == 1, describe(r)


@pytest.mark.parametrize(
    "given,needles",
    [
        ("0123456789ab", ("'0123456789ab'", "no row has an id starting with", "nothing was accepted")),
        ("not-a-row", ("'not-a-row'", "not a row id", "hex digits")),
        ("1a4106", ("'1a4106'", "too short", "at least 8")),
        ("", ("''", "not a row id")),
    ],
    ids=["unknown", "not-hex", "too-short", "empty"],
)
def test_accept_refuses_an_id_that_names_no_row(repo, given, needles):
    """Unknown, non-hex, too short: exit 2 naming the id, and the baseline is not touched."""
    write_jsonl(repo.data, ordinary_rows(N_BASE) + compliance_rows(1))
    before = snapshot(repo.baseline)
    assert_user_error(repo.run("accept", given, "--reason", "fine"), *needles)
    assert snapshot(repo.baseline) == before


def test_accept_refuses_a_prefix_of_several_rows(repo):
    """A prefix two known rows share is ambiguous: exit 2 listing both (with where they are), nothing changed; a
    longer prefix picks one."""
    from gradshield_lint.lint.baseline import accept, modify_baseline

    # Two accepted entries of the baseline (rows since removed from the data) that share their first 10 digits.
    a, b = "9f3a0c5e71" + "0" * 6, "9f3a0c5e71" + "f" * 6
    modify_baseline(repo.baseline, lambda base: accept(accept(base, a, "old review"), b, "old review"))
    before = snapshot(repo.baseline)
    err = assert_user_error(repo.run("accept", "9F3A0C5E", "--reason", "x"), "start of 2 row ids", "more digits")
    assert a in err and b in err and "accepted in the baseline" in err
    assert snapshot(repo.baseline) == before
    r = repo.run("accept", b[:12], "--reason", "reviewed again")
    assert r.exit_code == 0, describe(r)
    assert baseline_doc(repo)["accepted"] == {a: "old review", b: "reviewed again"}


def test_accept_resolves_against_the_files_given(repo, tmp_path):
    """A row of a dataset file given on the command line (not one of the configured `files`) is known too."""
    from gradshield_lint.io.rows import iter_rows

    other = tmp_path / "extra.jsonl"
    write_jsonl(other, compliance_rows(1))
    (row,) = list(iter_rows(other))
    assert_user_error(repo.run("accept", row.id[:12], "--reason", "x"), "no row has an id starting with")
    r = repo.run("accept", row.id[:12], str(other), "--reason", "x")
    assert r.exit_code == 0, describe(r)
    assert row.id in baseline_doc(repo)["accepted"]


def test_new_baselines_store_full_sha256_ids_and_reports_show_12_digits(repo):
    """Ids in the baseline are the whole sha256 (64 hex digits), in the JSON report too; the text report shows the
    first 12."""
    doc = baseline_doc(repo)
    assert all(len(k) == 64 and set(k) <= set("0123456789abcdef") for k in doc["scores"]), sorted(doc["scores"])[:3]
    write_jsonl(repo.data, ordinary_rows(N_BASE) + compliance_rows(1))
    (finding,) = report(repo.run("check", "-f", "json"))["findings"]
    assert len(finding["id"]) == 64
    text = repo.run("check").stdout
    assert finding["id"][:12] in text and finding["id"][:13] not in text


def test_an_old_baseline_with_16_digit_ids_still_knows_its_rows_and_is_upgraded(repo):
    """A baseline written before issue 33 (ids: the first 16 hex digits): its rows are known (only the new row is
    scored), `accept` and `baseline update` rewrite the ids of the rows present as full ones, scores unchanged.
    An old accepted id whose row is not in the data stays as it was (it still matches that row if it comes back)."""
    gone = "e" * 16
    old = make_legacy_baseline(repo.baseline, {gone: "reviewed long ago"})
    write_jsonl(repo.data, ordinary_rows(N_BASE) + compliance_rows(1))
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 1 and len(doc["findings"]) == 1, doc  # the 16 old rows are known
    full = doc["findings"][0]["id"]

    r = repo.run("accept", full[:12], "--reason", "reviewed")
    assert r.exit_code == 0, describe(r)
    after = baseline_doc(repo)
    assert after["accepted"] == {full: "reviewed", gone: "reviewed long ago"}
    assert all(len(k) == 64 for k in after["scores"]) and {k[:16]: v for k, v in after["scores"].items()} == old
    assert repo.run("check").exit_code == 0

    make_legacy_baseline(repo.baseline)  # old again, the acceptance cut to 16 digits as well
    r = repo.run("baseline", "update")
    assert r.exit_code == 0, describe(r)
    after = baseline_doc(repo)
    assert len(after["scores"]) == N_BASE + 1 and all(len(k) == 64 for k in after["scores"])
    assert after["accepted"] == {full: "reviewed", gone: "reviewed long ago"}
    assert {k[:16]: v for k, v in after["scores"].items() if k != full} == old
    assert repo.run("check").exit_code == 0


def test_baseline_update_scores_only_unknown_rows_and_drops_removed_ones(repo):
    old = baseline_doc(repo)
    rows = ordinary_rows(N_BASE)
    kept = rows[4:]
    added = ordinary_rows(3, start=100)
    write_jsonl(repo.data, kept + added)
    r = repo.run("baseline", "update")
    assert r.exit_code == 0, describe(r)
    assert "3 rows scored" in r.stderr and f"{N_BASE - 4 + 3} rows" in r.stderr
    new = baseline_doc(repo)
    assert len(new["scores"]) == N_BASE - 4 + 3
    # Known rows keep their stored scores exactly (they were not scored again); removed rows are gone.
    kept_ids = set(old["scores"]) & set(new["scores"])
    assert len(kept_ids) == N_BASE - 4
    assert all(new["scores"][i] == old["scores"][i] for i in kept_ids)
    assert len(set(new["scores"]) - set(old["scores"])) == 3
    assert new["threshold"] == old["threshold"]  # kept unless --rethreshold: concurrent updates merge cleanly

    # The updated baseline serves the check: nothing new.
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0 and report(r)["rows_scored"] == 0, describe(r)

    # --rescore scores every row again.
    r = repo.run("baseline", "update", "--rescore")
    assert r.exit_code == 0, describe(r)
    assert f"{N_BASE - 4 + 3} rows scored" in r.stderr
    assert set(baseline_doc(repo)["scores"]) == set(new["scores"])


def test_a_baseline_with_another_fingerprint_is_refused(repo):
    base = snapshot(repo.baseline)
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    for overrides, what in (
        ({"scoring": {"max_length": 80}}, "max_length"),
        ({"scoring": {"proxy": "refusal-nll"}}, "proxy"),
    ):
        repo.write_config(**overrides)
        r = repo.run("check")
        err = assert_user_error(r, "baseline made with", what, "run `gradshield-lint baseline update --rescore`")
        assert str(repo.baseline.name) in err
        r = repo.run("baseline", "update")  # without --rescore the update refuses too
        assert_user_error(r, "baseline made with", "--rescore")
        assert snapshot(repo.baseline) == base
    # After `baseline update --rescore` (here with max_length 80) the check runs again.
    repo.write_config(scoring={"max_length": 80})
    r = repo.run("baseline", "update", "--rescore")
    assert r.exit_code == 0, describe(r)
    assert baseline_doc(repo)["fingerprint"]["max_length"] == 80
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 0 and report(r)["rows_scored"] == 0, describe(r)


def test_diff_base_in_a_git_repository_without_baseline(tmp_path, model_dir):
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(12), git=True)
    git_cmd(repo.root, "add", "-A")
    git_cmd(repo.root, "commit", "-q", "-m", "rows")
    write_jsonl(
        repo.data, ordinary_rows(12)[::-1] + [ordinary_row(50), compliance_row(0), ordinary_row(51), compliance_row(3)]
    )
    before = snapshot(repo.data)
    r = repo.run("check", "--diff-base", "HEAD", "-f", "json")
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 4  # the reordered committed rows are not new
    assert finding_lines(doc) == {("data/train.jsonl", 14), ("data/train.jsonl", 16)}
    assert not repo.baseline.exists() and snapshot(repo.data) == before
    r = repo.run("check", "--diff-base", "no-such-ref")
    assert_user_error(r, "no-such-ref")


def test_several_invocations_on_subsets_give_the_same_verdict_as_one(repo):
    """pre-commit splits long file lists over several invocations: the verdict must not depend on the split."""
    rows = ordinary_rows(N_BASE)
    a = repo.root / "data" / "a.jsonl"
    b = repo.root / "data" / "b.jsonl"
    repo.data.unlink()
    # a: half the known rows plus a new ordinary row; b: the other half (one moved from a) plus a compliance row.
    write_jsonl(a, rows[1:8] + [ordinary_row(60)])
    write_jsonl(b, [rows[0]] + rows[8:] + [compliance_row(1)])
    one = repo.run("check", "-f", "json", "data/a.jsonl", "data/b.jsonl")
    assert one.exit_code == 1, describe(one)
    split = [repo.run("check", "-f", "json", f) for f in ("data/a.jsonl", "data/b.jsonl")]
    assert [s.exit_code for s in split] == [0, 1], [describe(s) for s in split]
    docs = [report(s) for s in split]
    whole = report(one)
    assert max(s.exit_code for s in split) == one.exit_code
    assert finding_lines(docs[0]) | finding_lines(docs[1]) == finding_lines(whole) == {("data/b.jsonl", N_BASE - 7 + 1)}
    assert docs[0]["rows_scored"] + docs[1]["rows_scored"] == whole["rows_scored"] == 2


# ------------------------------------------------------------------------------------------------ scan, score, filter


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, model_dir) -> Repo:
    """12 ordinary rows with 2 compliance rows at lines 5 and 11; no baseline."""
    rows = ordinary_rows(12)
    rows.insert(4, compliance_row(0))
    rows.insert(10, compliance_row(2))
    return make_repo(tmp_path_factory.mktemp("mixed") / "repo", model_dir, rows)


def test_scan_exit_codes(mixed, tmp_path):
    clean = write_jsonl(mixed.root / "data" / "clean" / "clean.jsonl", ordinary_rows(12))
    try:
        r = mixed.run("scan", str(clean))
        assert r.exit_code == 0, describe(r)
        assert "No rows above the threshold" in r.stdout and "12 rows scored, 0 flagged" in r.stdout
    finally:
        shutil.rmtree(clean.parent)
    r = mixed.run("scan", "data/train.jsonl")
    assert r.exit_code == 1, describe(r)
    assert "data/train.jsonl:5" in r.stdout and "data/train.jsonl:11" in r.stdout
    r = mixed.run("scan", "--exit-zero", "-f", "json", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 14 and finding_lines(doc) == {("data/train.jsonl", 5), ("data/train.jsonl", 11)}
    assert not mixed.baseline.exists()


def test_score_output(mixed, tmp_path):
    out = tmp_path / "scores.jsonl"
    r = mixed.run("score", "data/train.jsonl", "--output", str(out))
    assert r.exit_code == 0, describe(r)
    assert r.stdout == ""
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["line"] for x in recs] == list(range(1, 15))
    assert set(recs[0]) >= {"id", "file", "line", "fihs", "raw", "truncated", "tokens"}
    top2 = sorted(recs, key=lambda x: x["fihs"], reverse=True)[:2]
    assert {x["line"] for x in top2} == {5, 11}
    assert "14 rows scored" in r.stderr


def _write(path: Path, rows: list[dict], fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text(jsonl(rows), encoding="utf-8")
    elif fmt == "csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["prompt", "completion", "source"])
            w.writeheader()
            for i, r in enumerate(rows):
                w.writerow(
                    {
                        "prompt": r["messages"][0]["content"],
                        "completion": r["messages"][1]["content"],
                        "source": f"s{i}",
                    }
                )
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_filter_keeps_the_format_and_writes_removed_rows_beside(mixed, tmp_path, fmt):
    from gradshield_lint.io.rows import iter_rows

    rows = ordinary_rows(12)
    rows.insert(4, compliance_row(0))
    rows.insert(10, compliance_row(2))
    src = tmp_path / "in" / f"train.{fmt}"
    _write(src, rows, fmt)
    before = snapshot(src)
    dest = tmp_path / "out" / f"clean.{fmt}"
    r = run_cli(mixed.root, "filter", str(src), str(dest))
    assert r.exit_code == 0, describe(r)
    assert snapshot(src) == before
    removed = dest.with_name(f"clean.removed.{fmt}")
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([dest.name, removed.name])  # no temporary files left
    src_rows = list(iter_rows(src, None))
    kept_rows, removed_rows = list(iter_rows(dest, None)), list(iter_rows(removed, None))
    assert [x.id for x in removed_rows] == [src_rows[4].id, src_rows[10].id]
    assert [x.id for x in kept_rows] == [x.id for i, x in enumerate(src_rows) if i not in (4, 10)]
    assert "14 rows, 2 removed" in r.stderr
    if fmt == "csv":
        header = dest.read_text(encoding="utf-8").splitlines()[0]
        assert header == "prompt,completion,source"  # every column kept, in order
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(dest).column_names == pq.read_table(src).column_names


def test_filter_refuses_to_overwrite_its_input(mixed, tmp_path):
    before = snapshot(mixed.data)
    r = mixed.run("filter", "data/train.jsonl", "data/../data/train.jsonl")
    assert_user_error(r, "DEST must differ from SOURCE")
    r = mixed.run("filter", "data/train.jsonl", str(tmp_path / "clean.jsonl"), "--removed", "data/train.jsonl")
    assert_user_error(r, "must differ from SOURCE and DEST")
    r = mixed.run(
        "filter", "data/train.jsonl", str(tmp_path / "clean.jsonl"), "--removed", str(tmp_path / "clean.jsonl")
    )
    assert_user_error(r, "must differ from SOURCE and DEST")
    # An output format it cannot write is refused before any scoring.
    r = mixed.run("filter", "data/train.jsonl", str(tmp_path / "clean.txt"))
    assert_user_error(r, "clean.txt", ".jsonl")
    assert snapshot(mixed.data) == before
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["score"],
        ["check"],
        ["scan"],
        ["filter"],
        ["baseline"],
        ["baseline", "create"],
        ["baseline", "update"],
        ["accept"],
        ["card"],
        ["model"],
        ["model", "fetch"],
        ["model", "path"],
        ["daemon"],
        ["daemon", "start"],
        ["daemon", "stop"],
        ["daemon", "status"],
    ],
    ids=lambda c: " ".join(c) or "main",
)
def test_help_of_every_command(command, tmp_path):
    r = run_cli(tmp_path, *command, "--help")
    assert r.exit_code == 0, describe(r)
    assert "Usage:" in r.stdout and "--help" in r.stdout


def test_every_command_is_covered_by_the_help_test():
    from gradshield_lint.cli import main

    names = set(main.commands) | {
        f"{g} {c}" for g in ("baseline", "model", "daemon") for c in main.commands[g].commands
    }
    assert names <= {
        "score",
        "check",
        "scan",
        "filter",
        "baseline",
        "baseline create",
        "baseline update",
        "accept",
        "card",
        "model",
        "model fetch",
        "model path",
        "daemon",
        "daemon start",
        "daemon stop",
        "daemon status",
    }
