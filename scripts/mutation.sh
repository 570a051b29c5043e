#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the modules where a silent bug costs most, each against its own fast tests.
#
#   scripts/mutation.sh                      # every module below (slow: hours on a small machine)
#   scripts/mutation.sh decision loss        # only these (names from the table below)
#   scripts/mutation.sh --list               # the table
#   scripts/mutation.sh --summary [MODULE ...]  # the figures of the sessions in $MUTATION_OUT (also of a stopped run)
#   MUTATION_TESTS='tests/test_x.py -k fast' scripts/mutation.sh decision   # other tests for one module
#   MUTATION_SAMPLE=1 scripts/mutation.sh metrics  # the reproducible sample below, not every mutant (~1/4 of them)
#   MUTATION_SAMPLE=4 scripts/mutation.sh metrics  # one in 4 of that sample (chosen by a hash of operator and occurrence)
#
# The sample (MUTATION_SAMPLE=1) keeps, of cosmic-ray's operators: the plausible arithmetic swaps (+ <-> -, * <-> /,
# | <-> &, ** -> *, // -> /, % -> //), the off-by-one and negated comparisons (< <-> <=, > <-> >=, == <-> !=,
# is <-> is not, in <-> not in), `not` added, True <-> False, and <-> or, loops run zero times, break <-> continue,
# unary - dropped, and every second number replacement (cosmic-ray makes two per number: the even occurrences);
# the rest (e.g. + -> <<, < -> is, == -> >) is marked skipped and not counted. MUTATION_SAMPLE=k (k > 1) keeps one
# in k of those, the ones whose crc32("operator:occurrence") is divisible by k: the same mutants on every run.
# Either way, mutants inside type annotations of a module with `from __future__ import annotations` are skipped:
# those annotations are strings never evaluated, so such a mutant (`float | None` -> `float & None`) is equivalent.
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
SAMPLE="${MUTATION_SAMPLE:-0}"

# name | module | its fast tests (pytest arguments)
MODULES=(
  "decision|deepsift/decision.py|tests/test_decision_boundary.py tests/test_decision_rule.py -k \"not one_line_on_the_command_line\""
  "metrics|deepsift/evaluate/metrics.py|tests/test_eval_metrics.py tests/test_metrics_mutants.py"
  "curves|deepsift/evaluate/curves.py|tests/test_eval_metrics.py tests/test_metrics_mutants.py"
  "bootstrap|deepsift/evaluate/bootstrap.py|tests/test_eval_metrics.py tests/test_metrics_mutants.py"
  "heads|deepsift/model/heads.py|tests/test_heads.py tests/test_heads_mutants.py tests/test_decision_rule.py::test_one_class_svm_warns_when_it_rejects_far_more_than_nu"
  "loss|deepsift/train/loss.py|tests/test_train_loss.py"
  "views|deepsift/data/augment.py|tests/test_augment.py tests/test_train_views.py"
  "holdout|deepsift/train/holdout.py|tests/test_train_holdout.py -k roles"
  "checkpoint|deepsift/train/checkpoint.py|tests/test_train_checkpoint_crash.py tests/test_checkpoint_mutants.py tests/test_train_bad_input.py::test_disk_full_while_checkpointing_keeps_the_previous_checkpoint tests/test_train_bad_input.py::test_disk_full_while_saving_a_new_best_keeps_the_previous_best"
  "train-loop|deepsift/train/loop.py|tests/test_train_state.py tests/test_train_loop_mutants.py"
  "leaderboard|deepsift/challenges/leaderboard.py|tests/test_challenges_ranking.py tests/test_challenges_unseen.py tests/test_leaderboard_mutants.py -k sqlite"
  "scoring|deepsift/challenges/scoring.py|tests/test_challenges_ranking.py tests/test_challenges_flow.py tests/test_challenges_unseen.py tests/test_scoring_mutants.py -k sqlite"
  "queue|deepsift/challenges/queue.py|tests/test_challenges_queue.py tests/test_challenges_fairness.py tests/test_challenges_flow.py::test_queue_positions_follow_submission_order tests/test_queue_locks.py"
  "layouts|deepsift/data/layout.py|tests/test_layouts.py tests/test_layouts_mutants.py"
  "splits|deepsift/data/split.py|tests/test_data_export_split.py tests/test_split_mutants.py tests/test_layouts.py -k split"
  "audit|deepsift/evaluate/audit.py|tests/test_audit_mutants.py tests/test_eval_audit.py"
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

# One line per module (mutants run, killed, survived, survival rate; pending ones if the run was stopped) and
# $OUT/<name>.report.txt with every survivor's operator, place and diff. Skipped (not sampled) mutants are not counted.
summary() {
  "$PY" - "$@" "$OUT/$1.report.txt" <<'PYEOF'
import sys
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome
name, module, session, report = sys.argv[1:5]
total = killed = survived = 0
lines = []
with use_db(session, WorkDB.Mode.open) as db:
    pending = sum(1 for _ in db.pending_work_items)
    for item, result in db.completed_work_items:
        if result.worker_outcome == WorkerOutcome.SKIPPED:
            continue
        total += 1
        if result.test_outcome == TestOutcome.SURVIVED:
            survived += 1
            m = item.mutations[0]
            lines.append(f"--- {m.operator_name} occurrence {m.occurrence} at {m.start_pos[0]}:{m.start_pos[1]}"
                         f" ({m.definition_name})\n{result.diff}\n")
        else:
            killed += 1
with open(report, "w") as f:
    f.write(f"{name}: {module}, {survived} survivors of {total} mutants\n\n" + "".join(lines))
rate = 100.0 * survived / total if total else 0.0
left = f"  (pending {pending})" if pending else ""
print(f"{name:12s} {module:38s} mutants {total:4d}  killed {killed:4d}  survived {survived:3d}  survival {rate:5.1f} %{left}")
PYEOF
}

if [[ "${1:-}" == "--summary" ]]; then  # the figures of the sessions already in $OUT (e.g. of a run stopped early)
  shift
  for row in "${MODULES[@]}"; do
    IFS='|' read -r name module tests <<<"$row"
    [[ -f "$OUT/$name.sqlite" ]] && { [[ $# -eq 0 ]] || [[ " $* " == *" $name "* ]]; } && summary "$name" "$module" "$OUT/$name.sqlite"
  done
  exit 0
fi

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
     && { [[ "$SAMPLE" == 0 ]] || "$PY" - "$session" "$SAMPLE" "$module" <<'PYEOF'
import ast, re, sys, zlib
from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkResult, WorkerOutcome
KEEP = re.compile(
    r"core/(ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|BitOr_BitAnd|BitAnd_BitOr|Pow_Mul|FloorDiv_Div|Mod_FloorDiv)"
    r"|ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is|In_NotIn|NotIn_In)"
    r"|AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr|ReplaceOrWithAnd|ZeroIterationForLoop"
    r"|ReplaceBreakWithContinue|ReplaceContinueWithBreak|NumberReplacer|ReplaceUnaryOperator_USub_UAdd)$")
every, module = int(sys.argv[2]), sys.argv[3]
tree = ast.parse(open(module).read())
lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
           for n in tree.body)
notes = [a for n in ast.walk(tree) for a in ([n.annotation] if isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation
         else [n.returns] if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns else [])]
def in_annotation(line, col):  # a string never evaluated under `from __future__ import annotations`: equivalent
    return lazy and any((a.lineno, a.col_offset) <= (line, col) < (a.end_lineno, a.end_col_offset) for a in notes)
with use_db(sys.argv[1]) as db:
    for item in list(db.pending_work_items):
        m = item.mutations[0]
        keep = (KEEP.search(m.operator_name) and not (m.operator_name.endswith("NumberReplacer") and m.occurrence % 2)
                and zlib.crc32(f"{m.operator_name}:{m.occurrence}".encode()) % every == 0
                and not in_annotation(*m.start_pos))
        if not keep:
            db.set_result(item.job_id, WorkResult(output="not in the sample", worker_outcome=WorkerOutcome.SKIPPED))
PYEOF
       } \
     && "$VENV/bin/cosmic-ray" baseline cosmic-ray.toml \
     && "$VENV/bin/cosmic-ray" exec cosmic-ray.toml "$session")
  SUMMARY+=("$(summary "$name" "$module" "$session")")
  rm -rf "$work"
  trap - EXIT INT TERM
done

echo
echo "module       file                                   (reports with each survivor's diff: $OUT/<module>.report.txt)"
printf '%s\n' "${SUMMARY[@]}"
