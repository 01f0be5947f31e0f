#!/usr/bin/env bash
# Lists the dataset files to check, NUL-separated, in $RUNNER_TEMP/gradshield-lint/files, and sets the step outputs
#   list       that file's path
#   count      how many files it names
#   diff-base  the revision whose rows are not new (the pull request's base branch; a push's `before`), or empty
#
# pull_request: the files the pull request adds, modifies or changes the type of (a file turned into a symlink), by
# plain
#   git diff --name-only --diff-filter=AMTD origin/$GITHUB_BASE_REF...HEAD
# (the base branch is fetched when the checkout lacks it, and a shallow checkout is deepened until the merge base
# is there; deletions count only inside a dataset directory, below). push: the files changed since the event's
# `before` commit, fetched when the checkout lacks it (actions/checkout's default depth 1 never has it); when it
# cannot be had the step fails (exit 2): checking every file without it would let the pushed commit's own baseline
# judge its rows. A push that creates a branch (`before` all zeros) is judged like a pull request against the
# repository's default branch; only the push that creates the default branch itself, with no earlier revision to
# judge against, checks every tracked dataset file under its own gate (with a warning). Any other event: every
# tracked dataset file.
# A file inside a `datasets` save_to_disk directory (state.json and dataset_info.json, or dataset_dict.json: what
# `load_from_disk` reads) stands for the outermost such directory, listed once: its Arrow files are no dataset of
# their own and its JSON files are no rows.
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

push_event() {
  # The push event's `before` commit ("none" for a push that created the ref, "" when the event has no valid one),
  # its ref and the repository's default branch, one per line.
  [[ -n "${GITHUB_EVENT_PATH:-}" && -f "$GITHUB_EVENT_PATH" ]] || { printf '\n\n\n'; return 0; }
  python3 - "$GITHUB_EVENT_PATH" <<'PY' 2>/dev/null || printf '\n\n\n'
import json, re, sys
event = json.load(open(sys.argv[1], encoding="utf-8"))
before = event.get("before") or ""
if not isinstance(before, str) or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", before):
    before = ""
elif set(before) == {"0"}:
    before = "none"
one_line = lambda v: v if isinstance(v, str) and "\n" not in v else ""
print(before)
print(one_line(event.get("ref")))
print(one_line((event.get("repository") or {}).get("default_branch")))
PY
}

has_commit() { git rev-parse --verify --quiet "$1^{commit}" >/dev/null; }

fetch_branch() {  # branch: into refs/remotes/origin/BRANCH
  git fetch --quiet --no-tags origin "+refs/heads/$1:refs/remotes/origin/$1"
}

ensure_commit() {
  # A push's `before` in a shallow checkout: fetch that one commit (its tree is all a diff and --diff-base read),
  # or deepen the history that holds it (a server refusing to serve a commit by id).
  local rev=$1
  has_commit "$rev" && return 0
  echo "Fetching the push's before commit $rev"
  git fetch --quiet --no-tags --depth=1 origin "$rev" 2>/dev/null || true
  has_commit "$rev" && return 0
  if [[ "$(git rev-parse --is-shallow-repository)" == "true" ]]; then
    git fetch --quiet --no-tags --deepen=50 origin 2>/dev/null || true
    has_commit "$rev" && return 0
    git fetch --quiet --no-tags --unshallow origin 2>/dev/null || true
  fi
  has_commit "$rev"
}

ensure_merge_base() {
  # A shallow checkout (actions/checkout's default depth 1) has no merge base: deepen it, then unshallow.
  local base=origin/$1 branch=$1
  for depth in 50 500; do
    git merge-base "$base" HEAD >/dev/null 2>&1 && return 0
    [[ "$(git rev-parse --is-shallow-repository)" == "true" ]] || break
    git fetch --quiet --no-tags --deepen="$depth" origin "+refs/heads/$branch:refs/remotes/origin/$branch" || true
  done
  git merge-base "$base" HEAD >/dev/null 2>&1 && return 0
  if [[ "$(git rev-parse --is-shallow-repository)" == "true" ]]; then
    git fetch --quiet --no-tags --unshallow origin "+refs/heads/$branch:refs/remotes/origin/$branch" || true
  fi
  git merge-base "$base" HEAD >/dev/null 2>&1
}

# Deletions (D) are listed too: one inside a dataset directory changes the directory; any other is dropped below.
changed() {  # REVS...: the changed names, NUL-separated, into $raw
  git diff -z --name-only --no-renames --diff-filter=AMTD "$@" -- "${pathspecs[@]}" > "$raw"
}

against_branch() {  # branch what: the diff against origin/BRANCH from the merge base, as a pull request's
  local branch=$1
  if ! has_commit "origin/$branch"; then
    echo "Fetching the branch $branch"
    if ! fetch_branch "$branch"; then
      echo "::error title=gradshield-lint::cannot fetch $branch from origin, the revision $2 is judged against"
      exit 2
    fi
  fi
  if ! ensure_merge_base "$branch"; then
    echo "::error title=gradshield-lint::no merge base between $branch and HEAD; check out with fetch-depth: 0"
    exit 2
  fi
  diff_base="origin/$branch"
  changed "origin/$branch...HEAD"
}

diff_base=""
raw="$out_dir/files.raw"
if [[ -n "${GITHUB_BASE_REF:-}" ]]; then
  echo "Pull request: dataset files added or modified since origin/$GITHUB_BASE_REF"
  against_branch "$GITHUB_BASE_REF" "the pull request"
elif [[ "${GITHUB_EVENT_NAME:-}" == "push" ]]; then
  { IFS= read -r before; IFS= read -r ref; IFS= read -r default_branch; } < <(push_event)
  if [[ -z "$before" ]]; then
    echo "::error title=gradshield-lint::the push event names no valid before commit (GITHUB_EVENT_PATH), so there is no revision to judge the pushed rows against"
    exit 2
  elif [[ "$before" != "none" ]]; then
    if ! ensure_commit "$before"; then
      echo "::error title=gradshield-lint::cannot fetch the push's before commit $before from origin (force-pushed away, or the remote refuses it), so the pushed rows cannot be judged against it; checking without it would let the pushed commit's own baseline decide. Check out with fetch-depth: 0, or re-run once the commit is reachable."
      exit 2
    fi
    diff_base="$before"
    echo "Push: dataset files added or modified since $before"
    changed "$before" HEAD
  elif [[ -n "$default_branch" && "$ref" != "refs/heads/$default_branch" ]] \
       && git check-ref-format --branch "$default_branch" >/dev/null 2>&1; then
    echo "Push creating a branch: dataset files added or modified since origin/$default_branch (the default branch)"
    against_branch "$default_branch" "the new branch"
  else
    echo "::warning title=gradshield-lint::this push creates the default branch: there is no earlier revision to judge it against, so every dataset file is checked against the pushed commit's own baseline and configuration"
    git ls-files -z -- "${pathspecs[@]}" > "$raw"
  fi
else
  echo "No pull request or push range: every tracked dataset file"
  git ls-files -z -- "${pathspecs[@]}" > "$raw"
fi

is_saved_dataset() {  # dir: a `datasets` save_to_disk directory, as io/rows.py detects one
  [[ -d "$1" ]] && [[ -f "$1/dataset_dict.json" || ( -f "$1/state.json" && -f "$1/dataset_info.json" ) ]]
}

saved_dataset_of() {  # path: sets $ds to the outermost save_to_disk directory above it, or to nothing
  local d=$1
  ds=""
  while [[ "$d" == */* ]]; do
    d=${d%/*}
    is_saved_dataset "$d" && ds=$d
  done
  return 0
}

# Dataset files only; never the baseline; only what exists in the working tree. A symlink is listed, dangling or
# not, for the check to refuse (exit 2, naming it): it is no dataset file of its own.
baseline_name="${INPUT_BASELINE:-.gradshield-baseline.json}"
count=0
declare -A listed=()
while IFS= read -r -d '' f; do
  saved_dataset_of "$f"
  if [[ -n "$ds" ]]; then
    f=$ds
  elif [[ -L "$f" ]] && is_saved_dataset "$f"; then
    :  # a link to a dataset directory: listed for the check to refuse
  else
    lower="${f,,}"
    [[ "$lower" =~ \.(jsonl|ndjson|json|csv|tsv|parquet)$ ]] || continue
    [[ "$f" == "${baseline_name#./}" || "$(basename -- "$f")" == ".gradshield-baseline.json" ]] && continue
    [[ -f "$f" || -L "$f" ]] || continue
  fi
  [[ -n "${listed[$f]:-}" ]] && continue
  listed[$f]=1
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
