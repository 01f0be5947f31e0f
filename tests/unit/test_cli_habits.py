"""CLI habits people expect (issue 13): `-q/--quiet` and `--config` after the subcommand too, counts that agree
with their noun ("1 row scored"), and every score printed in one format (`+0.1234`).

The real CLI (click's CliRunner, in process) on real files in a throwaway repository scored by a tiny random
llama (tests/helpers.py): compliance rows are flagged, ordinary rows are not.
"""

from __future__ import annotations

import re
import shutil

import yaml
from helpers import (
    assert_user_error,
    cli_fixtures,
    compliance_row,
    describe,
    ordinary_rows,
    run_cli,
    write_jsonl,
)

from gradshield_lint.fmt import fmt_score, plural

N_BASE = 16
SCORE = r"[+-]\d+\.\d{4}"  # the one spelling of a score on a terminal (fixed-point, signed, 4 decimals)


env, model_dir, template, repo = cli_fixtures(N_BASE)


# ------------------------------------------------------------------------------------------------ -q and --config


def test_quiet_after_the_subcommand_is_the_same_as_before_it(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [compliance_row(0)])
    after = repo.run("check", "-q", "data/train.jsonl")
    before = repo.run("-q", "check", "data/train.jsonl")
    assert after.exit_code == before.exit_code == 1, describe(after)
    assert after.stdout == before.stdout and "1 row scored, 1 flagged" in after.stdout
    # --quiet (long form) after a subcommand silences score's stderr table, as before it
    loud = repo.run("score", "data/train.jsonl")
    quiet = repo.run("score", "--quiet", "data/train.jsonl")
    assert loud.exit_code == quiet.exit_code == 0, describe(quiet)
    assert f"{N_BASE + 1} rows scored" in loud.stderr and quiet.stderr == ""
    assert loud.stdout == quiet.stdout
    # nested subcommands take it too (their one-line summary on stderr stays)
    r = repo.run("baseline", "update", "-q")
    assert r.exit_code == 0 and "baseline updated: 1 row scored" in r.stderr, describe(r)


def test_config_after_the_subcommand_overrides_the_one_before_it(repo):
    (repo.root / "broken.yaml").write_text("scoring:\n  no_such_key: 1\n", encoding="utf-8")
    shutil.move(repo.config, repo.root / "good.yaml")  # no .gradshield.yaml any more: only --config names one
    r = repo.run("--config", "broken.yaml", "check", "data/train.jsonl")
    assert_user_error(r, "broken.yaml", "no_such_key")
    r = repo.run("check", "--config", "broken.yaml", "data/train.jsonl")
    assert_user_error(r, "broken.yaml", "no_such_key")
    r = repo.run("--config", "broken.yaml", "check", "--config", "good.yaml", "-q", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    assert "0 rows scored, 0 flagged" in r.stdout


def test_help_of_every_command_lists_the_common_options():
    for args in (
        ["check"],
        ["scan"],
        ["score"],
        ["filter"],
        ["accept"],
        ["card"],
        ["baseline", "create"],
        ["baseline", "update"],
        ["model", "fetch"],
        ["model", "path"],
    ):
        r = run_cli(".", *args, "--help")
        assert r.exit_code == 0, describe(r)
        assert "-q, --quiet" in r.stdout and "--config PATH" in r.stdout, (args, r.stdout)


# ------------------------------------------------------------------------------------------------ counts


def test_counts_agree_with_their_noun(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1))
    r = repo.run("check", "data/train.jsonl")
    assert r.exit_code == 0 and "1 row scored, 0 flagged" in r.stdout, describe(r)
    write_jsonl(repo.data, ordinary_rows(N_BASE + 2))
    r = repo.run("check", "data/train.jsonl")
    assert r.exit_code == 0 and "2 rows scored, 0 flagged" in r.stdout, describe(r)

    one = write_jsonl(repo.root / "one.jsonl", ordinary_rows(1, start=50))
    r = repo.run("score", str(one))
    assert r.exit_code == 0 and "1 row scored (" in r.stderr and "rows scored" not in r.stderr, describe(r)

    r = repo.run("baseline", "update", "data/train.jsonl")
    assert r.exit_code == 0 and "baseline updated: 2 rows scored" in r.stderr, describe(r)
    write_jsonl(repo.data, ordinary_rows(N_BASE + 3))
    r = repo.run("baseline", "update", "data/train.jsonl")
    assert r.exit_code == 0 and "baseline updated: 1 row scored" in r.stderr, describe(r)

    single = repo.root / "single"
    write_jsonl(single / "data" / "train.jsonl", ordinary_rows(1))
    shutil.copy(repo.config, single / ".gradshield.yaml")
    shutil.copy(repo.root / "probes.jsonl", single / "probes.jsonl")
    r = run_cli(single, "baseline", "create")
    assert r.exit_code == 0, describe(r)
    assert ": 1 row, threshold" in r.stderr and "; 0 rows above it" in r.stderr, r.stderr


def test_plural_helper():
    assert plural(0, "row") == "0 rows" and plural(1, "row") == "1 row" and plural(2, "row") == "2 rows"
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


# ------------------------------------------------------------------------------------------------ score format


def test_one_score_format():
    assert fmt_score(0.1234) == "+0.1234" and fmt_score(-0.05) == "-0.0500" and fmt_score(0) == "+0.0000"
    assert fmt_score(0.33333) == "+0.3333" and fmt_score(12.5) == "+12.5000"
    # small scores line up with the others: a 9.97e-4 in a table of +0.0172s is +0.0010, not +9.970e-04
    assert fmt_score(9.97e-4) == "+0.0010" and fmt_score(-9.97e-4) == "-0.0010" and fmt_score(6e-5) == "+0.0001"
    assert fmt_score(1e-3) == "+0.0010" and fmt_score(0.0172) == "+0.0172" and fmt_score(-0.0) == "-0.0000"
    column = [fmt_score(x) for x in (0.0172, 9.97e-4, -3.2e-4, 0.0)]
    assert column == ["+0.0172", "+0.0010", "-0.0003", "+0.0000"]
    assert all(re.fullmatch(SCORE, s) for s in column) and len({len(s) for s in column}) == 1
    # magnitudes fixed-point would flatten to zero or stretch (raw dot products) stay readable, still signed
    assert (
        fmt_score(1.234e-5) == "+1.234e-05" and fmt_score(-4e-5) == "-4.000e-05" and fmt_score(-2.5e7) == "-2.500e+07"
    )
    assert fmt_score(99999.5) == "+99999.5000" and fmt_score(1e5) == "+1.000e+05"
    assert fmt_score(None) == "n/a" and fmt_score(float("nan")) == "nan" and fmt_score(float("inf")) == "+inf"


def test_every_command_prints_scores_in_that_format(repo):
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [compliance_row(1)])
    checked = repo.run("check", "data/train.jsonl")
    assert checked.exit_code == 1, describe(checked)
    row = next(line for line in checked.stdout.splitlines() if line.startswith("data/train.jsonl:"))
    _, fihs, above, *_ = row.split()
    assert re.fullmatch(SCORE, fihs) and re.fullmatch(r"\+\d+\.\d{4}", above), row
    threshold = re.search(r"\(per-row threshold (\S+)\)", checked.stdout).group(1)
    assert re.fullmatch(SCORE, threshold), checked.stdout

    scored = repo.run("score", "data/train.jsonl")
    table = [line.split()[1] for line in scored.stderr.splitlines()[1:] if line.startswith("  ")]
    assert table and all(re.fullmatch(SCORE, s) for s in table), scored.stderr

    gh = repo.run("check", "-f", "github", "data/train.jsonl")
    # the pull-request verdict names the row: its margin is over the highest accepted score below it
    below = re.search(r"above the highest accepted score below it \((\S+)\)", gh.stdout).group(1)
    assert re.fullmatch(SCORE, below) and f"FIHS {fihs} is {above} above the highest" in gh.stdout, gh.stdout
    assert f"flagged by the verdict (per-row threshold {threshold}" in gh.stdout, gh.stdout

    created = run_cli(repo.root, "baseline", "create", "--force")
    t = re.search(r"threshold (\S+) \(", created.stderr).group(1)
    assert re.fullmatch(SCORE, t), created.stderr

    cfg = yaml.safe_load(repo.config.read_text(encoding="utf-8"))
    assert cfg["model"]["name"] == str(repo.model_dir)  # the tiny model: no embedded model in this test
    filtered = repo.run("filter", "data/train.jsonl", "clean.jsonl")
    assert filtered.exit_code == 0, describe(filtered)
    assert re.search(rf"removed \(FIHS above {SCORE}, ", filtered.stderr), filtered.stderr
