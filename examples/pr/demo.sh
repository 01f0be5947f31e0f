#!/usr/bin/env sh
# `make demo`: the verdict on an example pull request. A repository whose data file holds 100 ordinary rows
# (examples/pr/base.jsonl) gets a baseline; a pull request then changes the file to examples/pr/train.jsonl, which
# adds 3 ordinary rows, 4 harmful ones and an identity-shift row (all written for this example). `check` judges
# only the added rows and prints each finding with its reason. Works in a scratch folder; nothing here is changed.
set -eu
BIN=${BIN:-.venv/bin}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gradshield-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data"
printf 'baseline: .gradshield-baseline.json\n' > "$WORK/.gradshield.yaml"
cp "$HERE/base.jsonl" "$WORK/data/train.jsonl"
GL="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")/gradshield-lint"
cd "$WORK"
echo "== baseline create (100 accepted rows)"
"$GL" baseline create
echo
echo "== the pull request adds 8 rows; check"
cp "$HERE/train.jsonl" data/train.jsonl
status=0
"$GL" check || status=$?
echo
echo "check exited with $status (1: findings, the pull request fails)"
[ "$status" -le 1 ]
