#!/usr/bin/env bash
# Runs `gradshield-lint check` on the files changed_files.sh listed, and sets the step outputs
#   findings, max-score, threshold, sarif-file, report-file, gate-changes
# from the JSON report. Annotations (`-f github`: at most 10 `::error` lines at the exact file:line of each flagged
# row, escaped as the Actions toolkit escapes them, and a `::warning` for each change the pull request makes to its
# own gate) go to the log, the Markdown summary to $GITHUB_STEP_SUMMARY, the SARIF file where sarif-file says.
# On a pull request or push the check runs with --diff-base: the baseline, configuration and probe set are the base
# revision's, read through git. Exit status: 0 clean (or findings with fail-on-findings false), 1 findings (or a
# gate change with fail-on-gate-change), 2 the check itself failed (configuration, baseline or input error).
#
# Every input arrives through the environment (INPUT_*), never through the script's text.
set -uo pipefail

out_dir="${RUNNER_TEMP:?RUNNER_TEMP is not set}/gradshield-lint"
mkdir -p "$out_dir"
json="$out_dir/report.json"
sarif="${INPUT_SARIF_FILE:-$out_dir/results.sarif}"
annotations="$out_dir/annotations.txt"
stderr_log="$out_dir/stderr.txt"

set_output() {  # name value: the multi-line-safe form, so no value can add an output of its own
  local delim="gradshield_$RANDOM$RANDOM$RANDOM"
  printf '%s<<%s\n%s\n%s\n' "$1" "$delim" "$2" "$delim" >> "${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
}

show_inert() {  # print a file the runner must not read workflow commands from (row text, file names)
  [[ -s "$1" ]] || return 0
  local token="gradshield-$RANDOM$RANDOM$RANDOM"
  echo "::stop-commands::$token"
  cat -- "$1"
  echo "::$token::"
}

case "${INPUT_FAIL_ON_FINDINGS:-true}" in
  [Tt]rue) fail_on_findings=1 ;;
  [Ff]alse) fail_on_findings=0 ;;
  *) echo "::error title=gradshield-lint::fail-on-findings must be 'true' or 'false'"; exit 2 ;;
esac

if ! command -v gradshield-lint >/dev/null 2>&1; then
  echo "::error title=gradshield-lint::gradshield-lint is not on PATH (install: 'false' needs it installed already)"
  exit 2
fi
# The interpreter gradshield-lint runs under (it has PyYAML), for the small helpers below: the console script's
# `#!` line (`#!/path/to/python` or `#!/usr/bin/env python3`).
read -r -a shebang < <(sed -n '1s/^#![[:space:]]*//p' "$(command -v gradshield-lint)")
py="${shebang[0]:-}"
if [[ "$(basename -- "$py")" == "env" && -n "${shebang[1]:-}" ]]; then
  py=$(command -v "${shebang[1]}" || true)
fi
[[ -n "$py" && -x "$py" ]] || py=$(command -v python3 || command -v python)

files=()
if [[ -n "${GRADSHIELD_FILES:-}" && -f "$GRADSHIELD_FILES" ]]; then
  mapfile -d '' files < "$GRADSHIELD_FILES"
fi

gate_only=0
if (( ${#files[@]} == 0 )); then
  if [[ -z "${GRADSHIELD_DIFF_BASE:-}" ]]; then
    echo "No dataset files to check."
    if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
      printf '## gradshield-lint: :white_check_mark: no dataset files changed\n\nNothing to check.\n' >> "$GITHUB_STEP_SUMMARY"
    fi
    for name in findings gate-changes; do set_output "$name" 0; done
    for name in max-score threshold sarif-file report-file; do set_output "$name" ""; done
    exit 0
  fi
  # No rows to score, but the pull request may still change the baseline or configuration (raise the threshold for
  # the next one): `--gate-only` reports that without loading a model.
  gate_only=1
fi

# --- the scoring model and device inputs: options of the command, so the configuration read is the base one ------
model_args=()
[[ -n "${INPUT_MODEL:-}" ]] && model_args+=(--model "$INPUT_MODEL")
[[ -n "${INPUT_DEVICE:-}" ]] && model_args+=(--device "$INPUT_DEVICE")
config=()
[[ -n "${INPUT_CONFIG:-}" ]] && config=(--config "$INPUT_CONFIG")
case "${INPUT_FAIL_ON_GATE_CHANGE:-false}" in
  [Tt]rue) gate_args=(--fail-on-gate-change) ;;
  [Ff]alse) gate_args=() ;;
  *) echo "::error title=gradshield-lint::fail-on-gate-change must be 'true' or 'false'"; exit 2 ;;
esac

# --- the check ------------------------------------------------------------------------------------------------------
# With --diff-base (every pull request and push) the check reads the baseline, configuration and probe set as they
# are at that revision, through git: the pull request's own copies are reported (GS002), never obeyed.
summary_file="$out_dir/summary.md"
args=(-q "${model_args[@]}" "${config[@]}" check -f github -o "$annotations" --json "$json" --sarif "$sarif" --summary "$summary_file")
[[ -n "${INPUT_BASELINE:-}" ]] && args+=(--baseline "$INPUT_BASELINE")
[[ -n "${GRADSHIELD_DIFF_BASE:-}" ]] && args+=(--diff-base "$GRADSHIELD_DIFF_BASE" "${gate_args[@]}")
(( gate_only )) && args+=(--gate-only)

if (( gate_only )); then
  echo "No dataset files changed; checking the pull request's changes to the baseline and configuration."
else
  echo "gradshield-lint check: ${#files[@]} file(s)"
fi
rm -f -- "$annotations" "$json" "$summary_file"
gradshield-lint "${args[@]}" -- "${files[@]}" 2> "$stderr_log"
rc=$?
show_inert "$stderr_log"            # messages may quote file names or row text: shown, never obeyed
[[ -f "$annotations" ]] && cat -- "$annotations"   # the tool's own workflow commands, escaped by it

if (( rc != 0 && rc != 1 )) || [[ ! -f "$json" ]]; then
  echo "::error title=gradshield-lint::the check could not run (exit $rc); see the messages above"
  exit 2
fi
gate_changes=$("$py" -c 'import json, sys; g = json.load(open(sys.argv[1], encoding="utf-8")).get("gate") or {}; print(len(g.get("changes") or []), g.get("warnings") or 0)' "$json") \
  || { echo "::error title=gradshield-lint::unreadable JSON report"; exit 2; }
read -r n_changes n_warnings <<< "$gate_changes"
if [[ -n "${GITHUB_STEP_SUMMARY:-}" && -f "$summary_file" ]]; then
  if (( gate_only && n_changes == 0 )); then
    printf '## gradshield-lint: :white_check_mark: no dataset files changed\n\nNothing to check.\n' >> "$GITHUB_STEP_SUMMARY"
  else
    (( gate_only )) && printf 'No dataset files changed; the pull request changes the gate:\n\n' >> "$GITHUB_STEP_SUMMARY"
    cat -- "$summary_file" >> "$GITHUB_STEP_SUMMARY"
  fi
fi
rm -f -- "$summary_file"
set_output gate-changes "$n_warnings"
if (( gate_only )); then
  set_output findings 0
  set_output max-score ""
  set_output threshold ""
  if (( n_changes )); then
    set_output sarif-file "$sarif"
    set_output report-file "$json"
  else
    set_output sarif-file ""
    set_output report-file ""
  fi
  if (( rc == 1 )); then
    (( fail_on_findings )) && exit 1
    echo "::warning title=gradshield-lint::the pull request changes its own gate (fail-on-findings is false)"
  fi
  exit 0
fi

rm -f -- "$out_dir/outputs.txt"
"$py" - "$json" > "$out_dir/outputs.txt" <<'PY' || { echo "::error title=gradshield-lint::unreadable JSON report"; exit 2; }
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
fmt = lambda v: "" if v is None else (repr(v) if isinstance(v, float) else str(v))
findings = d.get("rows_flagged", len(d.get("findings") or []))
print(f"findings={findings}")
print(f"max-score={fmt(d.get('max_score'))}")
print(f"threshold={fmt(d.get('threshold'))}")
PY
while IFS='=' read -r name value; do
  set_output "$name" "$value"
done < "$out_dir/outputs.txt"
rm -f -- "$out_dir/outputs.txt"
set_output sarif-file "$sarif"
set_output report-file "$json"

# --- the dataset card (optional) ----------------------------------------------------------------------------------
if [[ -n "${INPUT_CARD_REPORT:-}" ]]; then
  card_args=(-q "${model_args[@]}" "${config[@]}" card)
  [[ -n "${INPUT_BASELINE:-}" ]] && card_args+=(--baseline "$INPUT_BASELINE")
  gradshield-lint "${card_args[@]}" -- "$INPUT_CARD_REPORT" 2> "$stderr_log"
  card_rc=$?
  show_inert "$stderr_log"
  if (( card_rc != 0 )); then
    echo "::error title=gradshield-lint::writing the dataset card failed (exit $card_rc)"
    exit 2
  fi
fi

if (( rc == 1 )); then
  if (( fail_on_findings )); then
    exit 1
  fi
  echo "::warning title=gradshield-lint::rows above the threshold (fail-on-findings is false)"
fi
exit 0
