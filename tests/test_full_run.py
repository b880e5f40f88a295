"""scripts/full_run.sh: its options are validated up front, and an empty selection runs the plumbing end to end."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "full_run.sh"


def run(tmp_path, **env):
    e = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=e, capture_output=True, text=True,
                          timeout=300)


def test_unknown_bench_size_is_refused(tmp_path):
    r = run(tmp_path, BENCH_SIZE="huge")
    assert r.returncode == 2
    assert "BENCH_SIZE" in r.stderr and "huge" in r.stderr


def test_unknown_profile_is_refused(tmp_path):
    r = run(tmp_path, PROFILE="medium")
    assert r.returncode == 2 and "PROFILE" in r.stderr


def test_empty_selection_writes_a_summary(tmp_path):
    r = run(tmp_path, CHAPTERS="", BENCHMARKS="", TESTS="", BENCH_SIZE="cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| step | status | seconds |" in summary and "exit status 0" in summary
    assert "chapter " not in summary.split("Chapter stamps")[0]  # no chapter was run
    log = (tmp_path / "out" / "full_run.log").read_text()
    assert "benchmark sizes: CPU (default)" in log
