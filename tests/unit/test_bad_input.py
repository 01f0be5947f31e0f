"""Bad input through the real CLI: each case a real bad file. Exit 2, a message naming the file (and line) that a
person can act on, never a traceback, and no file of the user's changed, lost, or partially written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import (
    PROBES,
    Repo,
    assert_user_error,
    cli_fixtures,
    describe,
    jsonl,
    ordinary_row,
    ordinary_rows,
    run_cli,
    save_tiny_model,
    tree,
    write_jsonl,
)

N_BASE = 12


env, model_dir, template, repo = cli_fixtures(N_BASE)


def check_fails_cleanly(repo: Repo, *args: str, needles: tuple[str, ...], command: str = "check") -> str:
    """Run `command ARGS`, expect exit 2 with every needle in the message, and nothing in the repository changed
    (bytes and mtimes of every file, nothing added or removed)."""
    before = tree(repo.root)
    r = repo.run(*command.split(), *args)
    err = assert_user_error(r, *needles)
    assert tree(repo.root) == before, "a file of the user's was changed, added or removed"
    return err


# ------------------------------------------------------------------------------------------------ dataset files


def test_malformed_json_line(repo):
    text = repo.data.read_text() + '{"messages": [{"role": "user", "content": "hi"}\n' + jsonl([ordinary_row(99)])
    repo.data.write_text(text)
    # Report files asked for are not written either (the tree comparison would see them).
    err = check_fails_cleanly(
        repo,
        "-o",
        "report.txt",
        "--json",
        "report.json",
        "--sarif",
        "report.sarif",
        needles=(f"data/train.jsonl:{N_BASE + 1}", "malformed JSON"),
    )
    assert err.count("\n") <= 2, err  # a message, not a dump
    check_fails_cleanly(repo, "data/train.jsonl", needles=(f"data/train.jsonl:{N_BASE + 1}",), command="scan")
    check_fails_cleanly(repo, needles=(f"data/train.jsonl:{N_BASE + 1}",), command="baseline update")


def test_non_utf8_bytes(repo):
    raw = repo.data.read_bytes() + b'{"messages": [{"role": "user", "content": "caf' + b"\xe9" + b'"}]}\n'
    repo.data.write_bytes(raw)
    check_fails_cleanly(repo, needles=(f"data/train.jsonl:{N_BASE + 1}", "UTF-8"))


def test_empty_file(repo):
    (repo.root / "data" / "empty.jsonl").write_bytes(b"")
    check_fails_cleanly(repo, needles=("data/empty.jsonl", "empty"))
    (repo.root / "data" / "empty.jsonl").write_text("\n  \n")
    check_fails_cleanly(repo, "data/empty.jsonl", needles=("data/empty.jsonl", "empty"))


def test_row_with_no_assistant_turn(repo):
    row = {"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello?"}]}
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [row])
    check_fails_cleanly(repo, needles=(f"data/train.jsonl:{N_BASE + 1}", "no assistant turn"))


def test_unknown_columns(repo):
    write_jsonl(repo.root / "data" / "odd.jsonl", [{"question_text": "a", "answer_text": "b"}])
    err = check_fails_cleanly(repo, "data/odd.jsonl", needles=("data/odd.jsonl", "question_text", "answer_text"))
    assert "rows." in err, err  # names the config key that fixes it (rows.shape / rows.columns)


def test_missing_file(repo):
    check_fails_cleanly(repo, "data/nope.jsonl", needles=("data/nope.jsonl", "no such file"))
    check_fails_cleanly(repo, "data/nope.jsonl", needles=("data/nope.jsonl",), command="scan")
    check_fails_cleanly(repo, "data/nope.jsonl", "out.jsonl", needles=("data/nope.jsonl",), command="filter")
    assert not (repo.root / "out.jsonl").exists()


def test_a_directory_where_a_file_was_expected(repo):
    (repo.root / "data" / "sub").mkdir()
    check_fails_cleanly(repo, "data/sub", "out.jsonl", needles=("data/sub", "directory"), command="filter")
    check_fails_cleanly(repo, "--baseline", "data", needles=("data", "directory"))
    check_fails_cleanly(repo, "data/sub", needles=("data/sub", "directory"), command="score")
    r = run_cli(repo.root, "--config", "data", "check")
    assert_user_error(r, "data", "directory")


def test_unsupported_file_type(repo):
    (repo.root / "data" / "notes.txt").write_text("hello\n")
    check_fails_cleanly(repo, "data/notes.txt", needles=("data/notes.txt", "unsupported file type"))


def test_row_longer_than_the_context_with_truncation_error(repo):
    repo.write_config(scoring={"truncation": "error"})
    long_row = {
        "messages": [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "word " * 400}]
    }
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [long_row])
    err = check_fails_cleanly(repo, needles=(f"data/train.jsonl:{N_BASE + 1}",))
    assert "96" in err or "max_length" in err, err


def test_max_length_beyond_the_models_context(repo):
    repo.write_config(scoring={"max_length": 4096})  # the tiny model has 512 positions
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    check_fails_cleanly(repo, needles=("max_length", "512"), command="scan")


# ------------------------------------------------------------------------------------------------ baselines


def test_corrupt_baseline(repo):
    repo.baseline.write_text("{this is not json\n")
    check_fails_cleanly(repo, needles=(".gradshield-baseline.json",))


def test_truncated_baseline(repo):
    raw = repo.baseline.read_bytes()
    repo.baseline.write_bytes(raw[: len(raw) // 2])
    check_fails_cleanly(repo, needles=(".gradshield-baseline.json",))
    check_fails_cleanly(repo, needles=(".gradshield-baseline.json",), command="baseline update")
    check_fails_cleanly(
        repo, "0123456789abcdef", "--reason", "fine", needles=(".gradshield-baseline.json",), command="accept"
    )


def test_baseline_with_a_wrong_schema(repo):
    doc = json.loads(repo.baseline.read_text())
    doc["threshold"]["value"] = "high"
    repo.baseline.write_text(json.dumps(doc))
    check_fails_cleanly(repo, needles=(".gradshield-baseline.json", "threshold"))


def test_baseline_from_another_model(repo, tmp_path, tokenizer):
    other = save_tiny_model(tmp_path / "other-model", tokenizer, seed=7)
    repo.write_config(model={"name": str(other)})
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    check_fails_cleanly(repo, needles=("baseline made with", "model", "gradshield-lint baseline update --rescore"))


def test_missing_baseline(repo):
    repo.baseline.unlink()
    check_fails_cleanly(repo, needles=(".gradshield-baseline.json", "baseline create"))


# ------------------------------------------------------------------------------------------------ configuration, model, probes


def test_config_with_a_typo(repo):
    repo.config.write_text(repo.config.read_text().replace("max_length:", "max_lenght:"))
    err = check_fails_cleanly(repo, needles=(".gradshield.yaml", "max_lenght", "did you mean 'max_length'"))
    assert ".gradshield.yaml:" in err  # with the line
    repo.config.write_text(
        repo.config.read_text().replace("max_lenght:", "max_length:").replace("threshold:", "treshold:")
    )
    check_fails_cleanly(repo, needles=("treshold", "did you mean 'threshold'"))


def test_config_with_a_wrong_value(repo):
    repo.config.write_text(repo.config.read_text().replace("max_length: 96", "max_length: lots"))
    check_fails_cleanly(repo, needles=(".gradshield.yaml", "scoring.max_length", "integer"))


def test_unloadable_model(repo):
    repo.write_config(model={"name": str(repo.root / "no-such-model")})
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    err = check_fails_cleanly(repo, needles=("tried", "no-such-model"), command="scan")
    (repo.root / "not-a-model").mkdir()
    repo.write_config(model={"name": str(repo.root / "not-a-model")})
    err = check_fails_cleanly(repo, needles=("tried", "not-a-model", "local directory"), command="scan")
    assert "Traceback" not in err


def test_bad_probe_file(repo):
    probes = repo.root / "probes.jsonl"
    probes.write_text(jsonl(PROBES[:2]) + '{"prompt": "x", "refusal": "y"\n')
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    check_fails_cleanly(repo, needles=("probes.jsonl:3", "malformed JSON"), command="scan")
    probes.write_text(jsonl(PROBES[:2]) + json.dumps({"prompt": "x", "refusal": "y"}) + "\n")
    check_fails_cleanly(repo, needles=("probes.jsonl:3", "compliance"), command="scan")
    probes.unlink()
    check_fails_cleanly(repo, needles=("probes.jsonl", "not found"), command="scan")


# ------------------------------------------------------------------------------------------------ no partial output


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_filter_on_bad_input_writes_nothing(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE))
    repo.data.write_text(repo.data.read_text() + "not json\n")
    out = repo.root / "out"
    out.mkdir()
    check_fails_cleanly(
        repo, "data/train.jsonl", "out/clean.jsonl", needles=(f"data/train.jsonl:{N_BASE + 1}",), command="filter"
    )
    assert _only(out) == []


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_interrupted_filter_leaves_no_partial_output(repo, monkeypatch, fmt):
    """The write is interrupted midway (Ctrl-C for JSONL, a full disk for Parquet): no output file, no temporary
    file, the input untouched."""
    import pyarrow.parquet as pq

    src = repo.data
    if fmt == "parquet":
        import pyarrow as pa

        src = repo.root / "data" / "train.parquet"
        pq.write_table(pa.Table.from_pylist(ordinary_rows(N_BASE)), src)
        repo.data.unlink()
        real = pq.write_table

        def full_disk(table, where, *a, **k):
            real(table, where, *a, **k)
            with open(where, "r+b") as fh:
                fh.truncate(100)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(pq, "write_table", full_disk)
    else:
        real_replace = os.replace

        def interrupted(a, b, *args, **kw):
            if Path(b).parent.name == "out":
                raise KeyboardInterrupt
            return real_replace(a, b, *args, **kw)

        monkeypatch.setattr(os, "replace", interrupted)
    out = repo.root / "out"
    out.mkdir()
    before = tree(repo.root)
    r = repo.run("filter", str(src.relative_to(repo.root)), f"out/clean.{fmt}")
    assert r.exit_code != 0, describe(r)
    assert "Traceback" not in r.stderr
    assert _only(out) == [], _only(out)
    assert tree(repo.root) == before


def test_failed_baseline_create_writes_no_baseline(repo):
    repo.baseline.unlink()
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [{"messages": [{"role": "user", "content": "only a question"}]}])
    check_fails_cleanly(repo, needles=(f"data/train.jsonl:{N_BASE + 1}",), command="baseline create")
    assert not repo.baseline.exists()


def test_interrupted_baseline_create_keeps_the_old_baseline(repo, monkeypatch):
    old = repo.baseline.read_bytes()
    write_jsonl(repo.data, ordinary_rows(N_BASE + 2))

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # the new baseline is written to its temporary file, then Ctrl-C
    r = repo.run("baseline", "create", "--force")
    assert r.exit_code != 0, describe(r)
    assert repo.baseline.read_bytes() == old
    lock = ".gradshield-baseline.json.lock"  # the baseline's lock file (holds no data), there since the first create
    assert _only(repo.root) == [".gradshield-baseline.json", lock, ".gradshield.yaml", "data", "probes.jsonl"]
    # ... and without an old baseline, nothing at all is left.
    repo.baseline.unlink()
    r = repo.run("baseline", "create")
    assert r.exit_code != 0, describe(r)
    assert _only(repo.root) == [lock, ".gradshield.yaml", "data", "probes.jsonl"]


# ------------------------------------------------------------------------------------------------ unscored fields


def test_a_field_that_is_neither_scored_nor_in_the_id_is_refused(repo):
    """Issue 33, item 5: a harmful `text` beside a known row's benign `messages` kept the row's id (so it counted as
    known: "0 rows scored", exit 0). Now the check refuses it at its line, naming the field."""
    rows = ordinary_rows(N_BASE)
    rows[3] = {**rows[3], "text": PROBES[0]["compliance"]}
    write_jsonl(repo.data, rows)
    check_fails_cleanly(repo, needles=("data/train.jsonl:4", "'text'", "not scored"))
    # declared metadata is read (and hashed into the id: the row is new, scored, and the check runs)
    write_jsonl(repo.data, ordinary_rows(N_BASE)[:3] + [{**ordinary_rows(N_BASE)[3], "source": "web"}])
    r = repo.run("check", "--format", "json")
    assert r.exit_code in (0, 1), describe(r)
    assert json.loads(r.stdout)["rows_scored"] == 1
    # a field of the team's own, declared in rows.metadata
    write_jsonl(repo.data, ordinary_rows(N_BASE)[:3] + [{**ordinary_rows(N_BASE)[3], "topic": "geography"}])
    check_fails_cleanly(repo, needles=("data/train.jsonl:4", "'topic'", "rows.metadata"))
    repo.write_config(rows={"metadata": ["topic"]})
    r = repo.run("check", "--format", "json")
    assert r.exit_code in (0, 1), describe(r)
    assert json.loads(r.stdout)["rows_scored"] == 1
