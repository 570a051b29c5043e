#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the modules where a silent bug costs most, each against its own fast tests.
#
#   scripts/mutation.sh                      # every module below (slow: hours on a small machine)
#   scripts/mutation.sh decision loss        # only these (names from the table below)
#   scripts/mutation.sh --list               # the table
#   MUTATION_TESTS='tests/test_x.py -k fast' scripts/mutation.sh decision   # other tests for one module
#
# Each module is mutated in a throwaway copy of the working tree (tracked and untracked, not ignored, files),
# never in place; the sessions are kept in $MUTATION_OUT (default: mutation-out/, ignored by git) and the script
# ends with one line per module: mutants, killed, survived, survival rate. Survivors are listed with their diff
# (cr-report); each one is a test to add or an equivalent mutant to note in benchmarks/README.md.
# cosmic-ray is installed into its own virtual environment (on top of the project's packages) on first use.
# Not part of .ci/run: run it before resolving an issue that touches one of these modules.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${MUTATION_OUT:-$ROOT/mutation-out}"
VENV="${MUTATION_VENV:-$HOME/.cache/deepsift-mutation-venv}"
TIMEOUT="${MUTATION_TIMEOUT:-120}"  # seconds per mutant's test run (a hang counts as killed)

# name | module | its fast tests (pytest arguments)
MODULES=(
  "decision|deepsift/decision.py|tests/test_decision_rule.py tests/test_decision_boundary.py"
  "metrics|deepsift/evaluate/metrics.py|tests/test_eval_metrics.py"
  "heads|deepsift/model/heads.py|tests/test_heads.py"
  "loss|deepsift/train/loss.py|tests/test_train_loss.py"
  "views|deepsift/data/augment.py|tests/test_augment.py tests/test_train_views.py"
  "holdout|deepsift/train/holdout.py|tests/test_train_holdout.py -k roles"
  "checkpoint|deepsift/train/checkpoint.py|tests/test_train_checkpoint_crash.py"
  "train-loop|deepsift/train/loop.py|tests/test_train_state.py"
  "leaderboard|deepsift/challenges/leaderboard.py|tests/test_challenges_flow.py"
  "scoring|deepsift/challenges/scoring.py|tests/test_challenges_flow.py"
  "queue|deepsift/challenges/queue.py|tests/test_challenges_queue.py"
  "layouts|deepsift/data/layout.py|tests/test_layouts.py"
  "splits|deepsift/data/split.py|tests/test_data_export_split.py"
  "audit|deepsift/evaluate/audit.py|tests/test_eval_audit.py"
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${MODULES[@]}" | column -t -s '|'
  exit 0
fi

if [[ ! -x "$VENV/bin/cosmic-ray" ]]; then
  python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install --quiet "cosmic-ray>=8.3,<9"
fi
PY="$VENV/bin/python"

WANT=("$@")
selected() {
  [[ ${#WANT[@]} -eq 0 ]] && return 0
  local w
  for w in "${WANT[@]}"; do [[ "$w" == "$1" ]] && return 0; done
  return 1
}

mkdir -p "$OUT"
SUMMARY=()
for row in "${MODULES[@]}"; do
  IFS='|' read -r name module tests <<<"$row"
  selected "$name" || continue
  tests="${MUTATION_TESTS:-$tests}"  # e.g. a narrower -k selection for a single module on a slow machine
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT INT TERM
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$work"
  cat >"$work/cosmic-ray.toml" <<EOF
[cosmic-ray]
module-path = "$module"
timeout = $TIMEOUT
excluded-modules = []
test-command = 'env PYTHONPATH=$work HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $PY -m pytest -x -q -p no:cacheprovider $tests'

[cosmic-ray.distributor]
name = "local"
EOF
  session="$OUT/$name.sqlite"
  rm -f "$session"
  echo "== $name: $module against $tests" >&2
  (cd "$work" && "$VENV/bin/cosmic-ray" init cosmic-ray.toml "$session" \
     && "$VENV/bin/cosmic-ray" baseline cosmic-ray.toml \
     && "$VENV/bin/cosmic-ray" exec cosmic-ray.toml "$session")
  "$VENV/bin/cr-report" --show-pending "$session" >"$OUT/$name.report.txt" || true
  SUMMARY+=("$("$PY" - "$session" "$name" "$module" "$VENV/bin/cosmic-ray" <<'PYEOF'
import json, subprocess, sys
session, name, module, cosmic_ray = sys.argv[1:5]
dump = subprocess.run([cosmic_ray, "dump", session], capture_output=True, text=True).stdout
total = killed = survived = 0
for line in dump.splitlines():
    item, result = json.loads(line)
    if not result:
        continue
    total += 1
    if result.get("test_outcome") == "survived":
        survived += 1
    else:
        killed += 1
rate = 100.0 * survived / total if total else 0.0
print(f"{name:12s} {module:38s} mutants {total:4d}  killed {killed:4d}  survived {survived:3d}  survival {rate:5.1f} %")
PYEOF
)")
  rm -rf "$work"
  trap - EXIT INT TERM
done

echo
echo "module       file                                   (reports with each survivor's diff: $OUT/<module>.report.txt)"
printf '%s\n' "${SUMMARY[@]}"
