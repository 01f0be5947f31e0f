#!/usr/bin/env bash
# Runs `gradshield-lint check` on the files changed_files.sh listed, and sets the step outputs
#   findings, max-score, threshold, sarif-file, report-file
# from the JSON report. Annotations (`-f github`: at most 10 `::error` lines at the exact file:line of each flagged
# row, escaped as the Actions toolkit escapes them) go to the log, the Markdown summary to $GITHUB_STEP_SUMMARY, the
# SARIF file where sarif-file says. Exit status: 0 clean (or findings with fail-on-findings false), 1 findings,
# 2 the check itself failed (configuration, baseline or input error).
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

if (( ${#files[@]} == 0 )); then
  echo "No dataset files to check."
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    printf '## gradshield-lint: :white_check_mark: no dataset files changed\n\nNothing to check.\n' >> "$GITHUB_STEP_SUMMARY"
  fi
  set_output findings 0
  set_output max-score ""
  set_output threshold ""
  set_output sarif-file ""
  set_output report-file ""
  exit 0
fi

# --- configuration: the user's, or an overlay beside it when the model or device input overrides it ----------------
config=()
overlay=""
# shellcheck disable=SC2329  # called by the trap
cleanup() { [[ -n "$overlay" ]] && rm -f -- "$overlay"; return 0; }
trap cleanup EXIT
if [[ -n "${INPUT_MODEL:-}" || -n "${INPUT_DEVICE:-}" ]]; then
  # Written beside the configuration it extends, so that its relative paths (probes, baseline, a local model)
  # still resolve as they did; removed when the step ends.
  overlay=$("$py" - <<'PY'
import json, os, pathlib, subprocess, sys
import yaml

src = os.environ.get("INPUT_CONFIG") or ""
if src:
    path = pathlib.Path(src)
else:
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    root = pathlib.Path(top.stdout.strip()) if top.returncode == 0 else pathlib.Path.cwd()
    here = pathlib.Path.cwd().resolve()
    path = None
    for d in [here, *here.parents]:
        if (d / ".gradshield.yaml").is_file():
            path = d / ".gradshield.yaml"
            break
        if d == root.resolve():
            break
    if path is None:
        path = root / ".gradshield.yaml"
data = {}
if path.is_file():
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
if not isinstance(data, dict):
    sys.exit(f"{path}: not a mapping")
model = dict(data.get("model") or {})
if os.environ.get("INPUT_MODEL"):
    model["name"] = os.environ["INPUT_MODEL"]
    if "adapter" not in model and os.environ["INPUT_MODEL"] != "embedded":
        model["adapter"] = None  # the embedded safety adapter belongs to the embedded model only
if os.environ.get("INPUT_DEVICE"):
    model["device"] = os.environ["INPUT_DEVICE"]
data["model"] = model
out = path.parent / f".gradshield.action-{os.getpid()}.yaml"
out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
print(out)
PY
) || { echo "::error title=gradshield-lint::could not apply the model/device inputs to the configuration"; exit 2; }
  config=(--config "$overlay")
elif [[ -n "${INPUT_CONFIG:-}" ]]; then
  config=(--config "$INPUT_CONFIG")
fi

# --- the check ------------------------------------------------------------------------------------------------------
args=(-q "${config[@]}" check -f github -o "$annotations" --json "$json" --sarif "$sarif")
[[ -n "${GITHUB_STEP_SUMMARY:-}" ]] && args+=(--summary "$GITHUB_STEP_SUMMARY")
[[ -n "${INPUT_BASELINE:-}" ]] && args+=(--baseline "$INPUT_BASELINE")
[[ -n "${GRADSHIELD_DIFF_BASE:-}" ]] && args+=(--diff-base "$GRADSHIELD_DIFF_BASE")

echo "gradshield-lint check: ${#files[@]} file(s)"
rm -f -- "$annotations" "$json"
gradshield-lint "${args[@]}" -- "${files[@]}" 2> "$stderr_log"
rc=$?
show_inert "$stderr_log"            # messages may quote file names or row text: shown, never obeyed
[[ -f "$annotations" ]] && cat -- "$annotations"   # the tool's own workflow commands, escaped by it

if (( rc != 0 && rc != 1 )) || [[ ! -f "$json" ]]; then
  echo "::error title=gradshield-lint::the check could not run (exit $rc); see the messages above"
  exit 2
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
  card_args=(-q "${config[@]}" card)
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
