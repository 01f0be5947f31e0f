#!/usr/bin/env bash
# Lists the dataset files to check, NUL-separated, in $RUNNER_TEMP/gradshield-lint/files, and sets the step outputs
#   list       that file's path
#   count      how many files it names
#   diff-base  the revision whose rows are not new (the pull request's base branch; a push's `before`), or empty
#
# pull_request: the files the pull request adds or modifies, by plain
#   git diff --name-only --diff-filter=AM origin/$GITHUB_BASE_REF...HEAD
# (the base branch is fetched when the checkout lacks it, and a shallow checkout is deepened until the merge base
# is there). push: the files changed since the event's `before` commit. Any other event, or a push that created
# the branch: every tracked dataset file (rows the baseline knows are not scored again anyway).
# INPUT_PATHS (paths or globs, one per line or space-separated; `**` matches any depth) narrows the list. Renames
# count as additions (--no-renames), so a renamed file with new rows is checked too.
set -euo pipefail

if [[ "${GITHUB_EVENT_NAME:-}" == "pull_request_target" ]]; then
  # Refused, not skipped: under pull_request_target the checkout is the base branch (so nothing would be checked
  # and the step would pass), and checking out the pull request's head instead would read untrusted data with the
  # base repository's secrets and write token in reach. Run on `pull_request`: it judges the head against the base
  # branch's baseline and configuration, which the pull request cannot change.
  echo "::error title=gradshield-lint::refusing to run on pull_request_target: there the checkout is the base branch, so the pull request's rows would not be checked at all, and checking out its head would put untrusted data in a job that holds the repository's secrets and write token. Trigger this workflow on pull_request instead (see the README's GitHub Action section)."
  exit 2
fi

out_dir="${RUNNER_TEMP:?RUNNER_TEMP is not set}/gradshield-lint"
mkdir -p "$out_dir"
list="$out_dir/files"
: > "$list"

pathspecs=()
if [[ -n "${INPUT_PATHS:-}" ]]; then
  while IFS= read -r line; do
    read -r -a words <<< "$line" || true
    for w in "${words[@]}"; do
      w="${w#./}"
      pathspecs+=(":(glob)$w")
    done
  done <<< "$INPUT_PATHS"
fi

event_before() {
  # The push event's `before` commit, or nothing.
  [[ -n "${GITHUB_EVENT_PATH:-}" && -f "$GITHUB_EVENT_PATH" ]] || return 0
  python3 - "$GITHUB_EVENT_PATH" <<'PY' 2>/dev/null || true
import json, re, sys
before = json.load(open(sys.argv[1], encoding="utf-8")).get("before") or ""
if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", before) and set(before) != {"0"}:
    print(before)
PY
}

has_commit() { git rev-parse --verify --quiet "$1^{commit}" >/dev/null; }

ensure_merge_base() {
  # A shallow checkout (actions/checkout's default depth 1) has no merge base: deepen it, then unshallow.
  local base=$1
  for depth in 50 500; do
    git merge-base "$base" HEAD >/dev/null 2>&1 && return 0
    [[ "$(git rev-parse --is-shallow-repository)" == "true" ]] || break
    git fetch --quiet --no-tags --deepen="$depth" origin "+refs/heads/$GITHUB_BASE_REF:refs/remotes/origin/$GITHUB_BASE_REF" || true
  done
  git merge-base "$base" HEAD >/dev/null 2>&1 && return 0
  if [[ "$(git rev-parse --is-shallow-repository)" == "true" ]]; then
    git fetch --quiet --no-tags --unshallow origin "+refs/heads/$GITHUB_BASE_REF:refs/remotes/origin/$GITHUB_BASE_REF" || true
  fi
  git merge-base "$base" HEAD >/dev/null 2>&1
}

diff_base=""
raw="$out_dir/files.raw"
if [[ -n "${GITHUB_BASE_REF:-}" ]]; then
  base="origin/$GITHUB_BASE_REF"
  if ! has_commit "$base"; then
    echo "Fetching the base branch $GITHUB_BASE_REF"
    git fetch --quiet --no-tags origin "+refs/heads/$GITHUB_BASE_REF:refs/remotes/origin/$GITHUB_BASE_REF"
  fi
  if ! ensure_merge_base "$base"; then
    echo "::error title=gradshield-lint::no merge base between the base branch and HEAD; check out with fetch-depth: 0" >&2
    exit 2
  fi
  diff_base="$base"
  echo "Pull request: dataset files added or modified since $base"
  git diff -z --name-only --no-renames --diff-filter=AM "$base...HEAD" -- "${pathspecs[@]}" > "$raw"
else
  before=$(event_before)
  if [[ -n "$before" ]] && has_commit "$before"; then
    diff_base="$before"
    echo "Push: dataset files added or modified since $before"
    git diff -z --name-only --no-renames --diff-filter=AM "$before" HEAD -- "${pathspecs[@]}" > "$raw"
  else
    echo "No pull request or push range: every tracked dataset file"
    git ls-files -z -- "${pathspecs[@]}" > "$raw"
  fi
fi

# Dataset files only; never the baseline; only files that exist in the working tree.
baseline_name="${INPUT_BASELINE:-.gradshield-baseline.json}"
count=0
while IFS= read -r -d '' f; do
  lower="${f,,}"
  [[ "$lower" =~ \.(jsonl|ndjson|json|csv|tsv|parquet)$ ]] || continue
  [[ "$f" == "${baseline_name#./}" || "$(basename -- "$f")" == ".gradshield-baseline.json" ]] && continue
  [[ -f "$f" ]] || continue
  printf '%s\0' "$f" >> "$list"
  count=$((count + 1))
done < "$raw"
rm -f "$raw"

# File names come from the pull request: print them where the runner reads no workflow commands.
token="gradshield-$RANDOM$RANDOM$RANDOM"
echo "::stop-commands::$token"
echo "$count dataset file(s) to check:"
tr '\0' '\n' < "$list" | sed 's/^/  /'
echo "::$token::"

{
  echo "list=$list"
  echo "count=$count"
  delim="gradshield_$RANDOM$RANDOM$RANDOM"
  printf 'diff-base<<%s\n%s\n%s\n' "$delim" "$diff_base" "$delim"
} >> "${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
