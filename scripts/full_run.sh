#!/usr/bin/env bash
# One command for a full run (issue 13): the unit tests, every chapter executed in the full profile (stamped with
# device and wall time by scripts/chapters.py) and every benchmark at full size, all within a wall-time budget
# (default 530 s: 9 minutes on one H100 with room to pack up). Results go to OUTDIR as at most 6 files:
#
#   summary.md          one line per step (ok / FAILED / TIMEOUT / SKIPPED, seconds) and the chapter wall-time table
#   full_run.log        everything the steps printed
#   notebooks.tar.gz    the refreshed notebooks/*.ipynb (+ *.failed.ipynb: a failing chapter, executed up to its error)
#   benchmarks.tar.gz   diffdens/_data/benchmarks/*.json written by this run
#   tests.log           the unit-test output
#
# usage: scripts/full_run.sh [--quick] OUTDIR         (--quick is PROFILE=quick: a dry run of the plumbing)
# On the 2-core CPU machine, give it the time the full profile needs there (up to 15 minutes per chapter), e.g.
#   BUDGET_S=7200 CHAPTER_TIMEOUT_S=900 BENCH_TIMEOUT_S=900 TEST_TIMEOUT_S=1800 scripts/full_run.sh OUTDIR
# Works without a Jupyter installation: if nbclient/jupytext/ipykernel are missing and .whl/ holds their wheels
# (../shared/gpu/jupyter-wheels.sh pytest pytest-timeout pytest-xdist), they are installed into /tmp/site first.
# A failing or timed-out step is reported and the run goes on; the exit status is nonzero if any step failed.
#
# Environment (all optional):
#   PROFILE=full|quick     quick: a dry run of the plumbing (quick chapters, small benchmarks)        [full]
#   PYTHON                 the interpreter                                                             [python3]
#   CHAPTERS               chapter sources to run; "" for none                            [notebooks/[0-9]*.md]
#   BENCHMARKS             benchmark names (benchmarks/NAME.py) to run; "" for none
#                          [estimators ode_speed path_integral_speed augmented_speed train_throughput baselines]
#   TESTS                  pytest arguments for the unit tests; "" to skip them                            [tests]
#   TESTS_ON=cpu|device    run the unit tests on the CPU in the background, beside the chapters, from a copy of
#                          the tree (default where a GPU is present), or on the device before the chapters
#   BENCH_SIZE=auto|full|cpu   benchmark sizes in the full profile: full is each benchmark's --full (GPU-sized: an
#                          H100 runs all six in minutes, a 2-core CPU would need hours), cpu its default (the size
#                          of the committed *_cpu.json); auto is full where a GPU is present, cpu otherwise   [auto]
#   BUDGET_S               total wall-time budget; a step gets at most what is left                          [530]
#   CHAPTER_TIMEOUT_S, BENCH_TIMEOUT_S, TEST_TIMEOUT_S   per-step limits                          [240, 180, 420]
set -u

if [ "${1:-}" = "--quick" ]; then PROFILE=quick; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--quick] OUTDIR   (env: PROFILE=full|quick, CHAPTERS, BENCHMARKS, TESTS, BUDGET_S; see the header)" >&2
  exit 2
fi
START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
OUTDIR=$(cd "$1" && pwd)
cd "$ROOT"

PROFILE=${PROFILE:-full}
PYTHON=${PYTHON:-python3}
CHAPTERS=${CHAPTERS-$(ls notebooks/[0-9]*.md)}
BENCHMARKS=${BENCHMARKS-estimators ode_speed path_integral_speed augmented_speed train_throughput baselines}
TESTS=${TESTS-tests}
BENCH_SIZE=${BENCH_SIZE:-auto}
BUDGET_S=${BUDGET_S:-530}
CHAPTER_TIMEOUT_S=${CHAPTER_TIMEOUT_S:-240}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-180}
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-420}
case "$PROFILE" in full|quick) ;; *) echo "PROFILE must be full or quick, got $PROFILE" >&2; exit 2;; esac
case "$BENCH_SIZE" in auto|full|cpu) ;; *) echo "BENCH_SIZE must be auto, full or cpu, got $BENCH_SIZE" >&2; exit 2;; esac

WORK=$(mktemp -d /tmp/full_run.XXXXXX)
LOG="$OUTDIR/full_run.log"
SUMMARY="$WORK/summary.md"
: > "$LOG"
echo "# full run ($PROFILE profile), started $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" > "$SUMMARY"
echo >> "$SUMMARY"
echo "| step | status | seconds |" >> "$SUMMARY"
echo "|---|---|---:|" >> "$SUMMARY"
FAILED=0
touch "$WORK/marker"

log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# run_step NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, budget left) seconds, appends to the log and summary.
run_step() {
  local name=$1 limit=$2; shift 2
  local rest; rest=$(left)
  if [ "$rest" -lt 15 ]; then
    log "SKIPPED $name (budget spent)"; echo "| $name | SKIPPED (budget) | 0 |" >> "$SUMMARY"; FAILED=1; return 1
  fi
  [ "$rest" -lt "$limit" ] && limit=$rest
  log "START $name (limit ${limit}s)"
  local t0 rc status; t0=$(date +%s)
  timeout -k 15 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit}s"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  log "END $name: $status in ${dt}s"
  echo "| $name | $status | $dt |" >> "$SUMMARY"
  [ $rc -eq 0 ]
}

# --- environment: Jupyter pieces from wheels where missing (the GPU machine has JAX but no Jupyter) ----------------
if ! "$PYTHON" -c "import nbclient, jupytext, ipykernel, nbformat" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    log "installing Jupyter wheels from .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >> "$LOG" 2>&1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
    "$PYTHON" -m ipykernel install --user --name python3 >> "$LOG" 2>&1
  else
    log "nbclient/jupytext/ipykernel missing and no .whl/: run ../shared/gpu/jupyter-wheels.sh pytest pytest-timeout pytest-xdist"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
"$PYTHON" - >> "$LOG" 2>&1 <<'PY'
import jax, platform
print("python", platform.python_version(), "jax", jax.__version__, "devices", jax.devices())
PY
HAS_GPU=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >> "$LOG" 2>&1 && HAS_GPU=1
TESTS_ON=${TESTS_ON:-$([ $HAS_GPU = 1 ] && echo cpu || echo device)}
[ "$BENCH_SIZE" = auto ] && BENCH_SIZE=$([ $HAS_GPU = 1 ] && echo full || echo cpu)
BENCH_FULL=0; [ "$PROFILE" = full ] && [ "$BENCH_SIZE" = full ] && BENCH_FULL=1
log "benchmark sizes: $([ $BENCH_FULL = 1 ] && echo 'full (--full)' || echo 'CPU (default)')"

# --- unit tests ----------------------------------------------------------------------------------------------------
XDIST=""
"$PYTHON" -c "import xdist" 2>/dev/null && XDIST="-n 4 --dist loadfile"
TIMEOUT_ARG=""
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARG="--timeout=300"
TEST_PID=""
if [ -n "$TESTS" ]; then
  if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    log "FAILED unit tests: pytest is not installed"; echo "| unit tests | FAILED (no pytest) | 0 |" >> "$SUMMARY"; FAILED=1
  elif [ "$TESTS_ON" = cpu ]; then
    # from a copy of the tree, so that the chapters refreshed meanwhile are not read half-written
    mkdir -p "$WORK/tree"
    tar --exclude=./.git --exclude=./.whl --exclude=./.venv --exclude=./_build -cf - . | (cd "$WORK/tree" && tar -xf -)
    tlimit=$(( $(left) - 20 )); [ "$tlimit" -gt "$TEST_TIMEOUT_S" ] && tlimit=$TEST_TIMEOUT_S
    log "START unit tests on the CPU in the background (limit ${tlimit}s): pytest -q $XDIST $TESTS"
    ( cd "$WORK/tree" && t0=$(date +%s) && \
      JAX_PLATFORMS=cpu DIFFDENS_PROFILE=quick PYTHONPATH="$WORK/tree${PYTHONPATH:+:$PYTHONPATH}" \
        timeout -k 10 "$tlimit" "$PYTHON" -m pytest -q $XDIST $TIMEOUT_ARG -p no:cacheprovider $TESTS \
        > "$OUTDIR/tests.log" 2>&1; echo "$? $(( $(date +%s) - t0 ))" > "$WORK/tests.rc" ) &
    TEST_PID=$!
  else
    run_step "unit tests" "$TEST_TIMEOUT_S" env DIFFDENS_PROFILE=quick XLA_PYTHON_CLIENT_PREALLOCATE=false \
      "$PYTHON" -m pytest -q $XDIST $TIMEOUT_ARG -p no:cacheprovider $TESTS
    grep -E "passed|failed|error" "$LOG" | tail -1 > "$OUTDIR/tests.log"
  fi
fi

# --- chapters ------------------------------------------------------------------------------------------------------
mkdir -p "$WORK/failed"
for md in $CHAPTERS; do
  run_step "chapter $(basename "$md" .md)" "$CHAPTER_TIMEOUT_S" \
    "$PYTHON" scripts/chapters.py refresh --profile "$PROFILE" --failed-dir "$WORK/failed" "$md"
done

# --- benchmarks (after the chapters, alone on the device, so their timings are not shared) -------------------------
for b in $BENCHMARKS; do
  f=benchmarks/$b.py
  if [ ! -f "$f" ]; then log "FAILED benchmark $b: no $f"; echo "| benchmark $b | FAILED (missing) | 0 |" >> "$SUMMARY"; FAILED=1; continue; fi
  if grep -q -- '"--full"' "$f"; then
    args=$([ $BENCH_FULL = 1 ] && echo --full)
  elif grep -q -- '"--small"' "$f"; then  # full size by default, --small for a CPU
    args=$([ $BENCH_FULL = 0 ] && echo --small)
  else
    args=""
  fi
  run_step "benchmark $b${args:+ $args}" "$BENCH_TIMEOUT_S" "$PYTHON" "$f" $args
done

# --- unit tests in the background: wait for them within the budget ------------------------------------------------
if [ -n "$TEST_PID" ]; then
  wait "$TEST_PID"  # its own timeout ends it within the budget
  if [ ! -s "$WORK/tests.rc" ]; then
    log "END unit tests: no exit status"; echo "| unit tests (cpu, background) | FAILED (no status) | - |" >> "$SUMMARY"; FAILED=1
  else
    read -r rc dt < "$WORK/tests.rc"
    case $rc in 0) status=ok;; 124|137) status="TIMEOUT after ${tlimit}s";; *) status="FAILED (exit $rc)";; esac
    [ "$rc" = 0 ] || FAILED=1
    log "END unit tests (cpu, background): $status in ${dt}s: $(tail -1 "$OUTDIR/tests.log")"
    echo "| unit tests (cpu, background) | $status: $(tail -1 "$OUTDIR/tests.log" | tr -d '=|') | $dt |" >> "$SUMMARY"
  fi
fi

# --- pack up -------------------------------------------------------------------------------------------------------
nbs=$(find notebooks -name '*.ipynb' -newer "$WORK/marker")
cp "$WORK"/failed/*.ipynb notebooks/ 2>/dev/null && nbs="$nbs $(cd "$WORK/failed" && ls *.ipynb | sed 's|^|notebooks/|')"
[ -n "$(echo $nbs)" ] && tar -czf "$OUTDIR/notebooks.tar.gz" $nbs && rm -f notebooks/*.failed.ipynb
jsons=$(find diffdens/_data/benchmarks -name '*.json' -newer "$WORK/marker" 2>/dev/null)
[ -n "$jsons" ] && tar -czf "$OUTDIR/benchmarks.tar.gz" $jsons
{
  echo
  echo "Chapter stamps after the run (\`python scripts/chapters.py times\`):"
  echo
  "$PYTHON" scripts/chapters.py times 2>&1
  echo
  echo "Notebooks written: $(echo $nbs)"
  echo "Benchmark results written: $(echo $jsons)"
  echo "Total wall time: $(( $(date +%s) - START )) s; exit status $FAILED"
} >> "$SUMMARY"
cp "$SUMMARY" "$OUTDIR/summary.md"
cat "$OUTDIR/summary.md"
rm -rf "$WORK"
exit $FAILED
