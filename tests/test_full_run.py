"""scripts/full_run.py: options validated up front (with environment fallbacks), an empty selection runs the
plumbing to a summary, benchmark sizes are explicit, and every step is a process group that a timeout or an
interrupt kills whole. Fake steps only (short Python sleepers): no chapter or benchmark is run."""

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import full_run  # noqa: E402

# a step that starts a grandchild (same process group), writes "own pid, grandchild pid" and sleeps
SLEEPER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def sleeper(pidfile, name="sleeper", limit_s=60.0, **kw):
    return full_run.Step(name, [sys.executable, "-c", SLEEPER, str(pidfile)], limit_s, **kw)


def pids(pidfile, timeout=30.0):
    t = time.monotonic()
    while not Path(pidfile).exists():
        assert time.monotonic() - t < timeout, f"{pidfile} never written"
        time.sleep(0.02)
    return [int(p) for p in Path(pidfile).read_text().split()]


def bare(tmp_path, **kw):
    """A config that runs only the steps it is given: no setup, nothing selected."""
    return full_run.Config(outdir=tmp_path / "out", chapters=[], benchmarks=[], tests=[], gpu=False, setup=False,
                           kill_grace_s=2.0, **kw)


def source_tree_state():
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                       capture_output=True, text=True)
    return set(r.stdout.splitlines()) if r.returncode == 0 else None


# --- options ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, env", [([], {"BENCH_SIZE": "huge"}), (["--bench-size", "huge"], {})])
def test_unknown_bench_size_is_refused(tmp_path, capsys, argv, env):
    with pytest.raises(SystemExit) as e:
        full_run.main([str(tmp_path / "out"), *argv], environ=env)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "BENCH_SIZE" in err and "huge" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("argv, env", [([], {"PROFILE": "medium"}), (["--profile", "medium"], {})])
def test_unknown_profile_is_refused(tmp_path, capsys, argv, env):
    with pytest.raises(SystemExit) as e:
        full_run.main([str(tmp_path / "out"), *argv], environ=env)
    assert e.value.code == 2 and "PROFILE" in capsys.readouterr().err


def test_bad_timeout_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        full_run.main([str(tmp_path / "out")], environ={"CHAPTER_TIMEOUT_S": "ten"})
    assert e.value.code == 2 and "CHAPTER_TIMEOUT_S" in capsys.readouterr().err


def test_environment_fallbacks_and_flags(tmp_path):
    env = {"PROFILE": "quick", "CHAPTERS": "", "BENCHMARKS": "ode_speed baselines", "TESTS": "tests -k sde",
           "BUDGET_S": "7200", "CHAPTER_TIMEOUT_S": "900", "BENCH_SIZE": "cpu", "TESTS_ON": "device"}
    c = full_run.parse_args([str(tmp_path)], environ=env)
    assert (c.profile, c.chapters, c.benchmarks, c.tests) == ("quick", [], ["ode_speed", "baselines"],
                                                              ["tests", "-k", "sde"])
    assert (c.budget_s, c.chapter_timeout_s, c.bench_size, c.tests_on) == (7200, 900, "cpu", "device")
    # the command line wins; defaults without the environment
    c = full_run.parse_args([str(tmp_path), "--profile", "full", "--chapters", "notebooks/01_*.md", "--tests", "",
                             "--budget", "60"], environ=env)
    assert (c.profile, c.chapters, c.tests, c.budget_s) == ("full", ["notebooks/01_*.md"], [], 60)
    c = full_run.parse_args([str(tmp_path), "--quick"], environ={})
    assert c.profile == "quick" and c.chapters is None and c.tests == ["tests"]
    assert c.benchmarks == list(full_run.DEFAULT_BENCHMARKS) and c.bench_size == "auto" and c.budget_s == 530


# --- the plan ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu, profile, bench_size, expect", [
    (True, "full", "auto", "full"), (False, "full", "auto", "cpu"), (True, "quick", "auto", "cpu"),
    (False, "full", "full", "full"), (True, "full", "cpu", "cpu")])
def test_benchmark_sizes_are_explicit(tmp_path, gpu, profile, bench_size, expect):
    cfg = full_run.Config(outdir=tmp_path / "out", profile=profile, bench_size=bench_size, gpu=gpu, tests=[],
                          chapters=["notebooks/13_*.md", "notebooks/99_missing.md"],
                          benchmarks=["ode_speed", "no_such_bench"])
    r = full_run._Run(cfg)
    try:
        steps = r.plan()
    finally:
        r.kill_all(1.0)
        shutil.rmtree(r.work)
    by = {s.name: s for s in steps}
    ch = by["chapter 13_which_estimator"].cmd
    assert ch[1:5] == ["scripts/chapters.py", "refresh", "--profile", profile]
    assert Path(ch[ch.index("--failed-dir") + 1]) == (tmp_path / "out" / "failed").resolve()  # not the source tree
    assert by["chapter 99_missing"].cmd == []  # reported as missing, not silently skipped
    assert by[f"benchmark ode_speed --size {expect}"].cmd[1:] == ["benchmarks/ode_speed.py", "--size", expect]
    assert by[f"benchmark no_such_bench --size {expect}"].cmd == []
    assert f"benchmark sizes: {expect}" in (tmp_path / "out" / "full_run.log").read_text()
    # the benchmarks run before the chapters that read their JSON (chapter 13)
    names = [s.name for s in steps]
    assert max(i for i, n in enumerate(names) if n.startswith("benchmark ")) < names.index("chapter 13_which_estimator")


def test_every_benchmark_script_takes_size():
    scripts = [p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py"]
    assert scripts
    for p in scripts:
        text = p.read_text()
        assert "size_option(" in text, f"{p.name} has no --size option"
        assert '"--small"' not in text and '"--full"' not in text, p.name


# --- runs -------------------------------------------------------------------------------------------------------

def test_empty_selection_writes_a_summary(tmp_path, capsys):
    before = source_tree_state()
    rc = full_run.main([str(tmp_path / "out"), "--chapters", "--benchmarks", "--tests", "", "--bench-size", "cpu"],
                       environ={})
    assert rc == 0, capsys.readouterr().out
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| step | status | seconds |" in summary and "exit status 0" in summary
    assert "chapter " not in summary.split("Chapter stamps")[0]  # no chapter was run
    log = (tmp_path / "out" / "full_run.log").read_text()
    assert "benchmark sizes: cpu" in log and "jax" in log  # the environment line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["full_run.log", "summary.md"]
    assert source_tree_state() == before  # nothing written into the source tree


def test_steps_report_failure_and_go_on(tmp_path):
    steps = [full_run.Step("fails", [sys.executable, "-c", "raise SystemExit(3)"], 30),
             full_run.Step("works", [sys.executable, "-c", "print('hello from a step')"], 30)]
    s = full_run.run(bare(tmp_path), steps=steps)
    assert [(r.name, r.status) for r in s.results] == [("fails", "FAILED (exit 3)"), ("works", "ok")]
    assert s.exit_status == 1 and s.interrupted is None
    assert "hello from a step" in (tmp_path / "out" / "full_run.log").read_text()
    assert "| fails | FAILED (exit 3) |" in (tmp_path / "out" / "summary.md").read_text()


def test_a_failed_notebook_is_packed_from_the_output_dir(tmp_path):
    """What chapters.py refresh --failed-dir leaves in OUTDIR/failed is packed as notebooks/*.failed.ipynb."""
    failed = (tmp_path / "out" / "failed").resolve()
    write = (f"import pathlib; p = pathlib.Path({str(failed)!r}); p.mkdir(parents=True, exist_ok=True); "
             "(p / '99_x.failed.ipynb').write_text('{}'); raise SystemExit(1)")
    s = full_run.run(bare(tmp_path), steps=[full_run.Step("chapter 99_x", [sys.executable, "-c", write], 30)])
    assert s.exit_status == 1 and s.notebooks == ["notebooks/99_x.failed.ipynb"]
    with tarfile.open(tmp_path / "out" / "notebooks.tar.gz") as tar:
        assert tar.getnames() == ["notebooks/99_x.failed.ipynb"]
    assert not failed.exists()  # packed: the output dir keeps its few files
    assert not (ROOT / "notebooks" / "99_x.failed.ipynb").exists()


def test_a_step_that_cannot_start_fails(tmp_path):
    s = full_run.run(bare(tmp_path), steps=[full_run.Step("nothing", [str(tmp_path / "no_such_program")], 30)])
    assert s.results[0].status.startswith("FAILED (cannot start") and s.exit_status == 1


def test_timeout_is_reported_and_kills_the_process_group(tmp_path):
    t = time.monotonic()
    s = full_run.run(bare(tmp_path), steps=[sleeper(tmp_path / "pids", limit_s=1.0),
                                            full_run.Step("after", [sys.executable, "-c", "pass"], 30)])
    assert time.monotonic() - t < 20
    assert [(r.name, r.status) for r in s.results] == [("sleeper", "TIMEOUT after 1s"), ("after", "ok")]
    assert s.exit_status == 1
    assert "| sleeper | TIMEOUT after 1s |" in (tmp_path / "out" / "summary.md").read_text()
    for pid in pids(tmp_path / "pids"):  # the step and its grandchild
        assert not full_run.alive(pid)


def test_budget_skips_steps(tmp_path):
    s = full_run.run(bare(tmp_path, budget_s=5), steps=[full_run.Step("late", [sys.executable, "-c", "pass"], 30)])
    assert [(r.name, r.status) for r in s.results] == [("late", "SKIPPED (budget)")] and s.exit_status == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_kills_every_process_group(tmp_path, sig):
    """A signal while a foreground step runs beside a background one: both groups killed (grandchildren too),
    the summary so far written, exit status 130, the previous handler restored."""
    old = signal.getsignal(sig)
    fg, bg = tmp_path / "fg.pids", tmp_path / "bg.pids"

    def send():
        pids(fg)
        pids(bg)
        os.kill(os.getpid(), sig)

    threading.Thread(target=send, daemon=True).start()
    t = time.monotonic()
    s = full_run.run(bare(tmp_path), steps=[
        full_run.Step("done", [sys.executable, "-c", "pass"], 30),
        sleeper(bg, "background sleeper", background=True),
        sleeper(fg, "foreground sleeper"),
        full_run.Step("never", [sys.executable, "-c", "pass"], 30)])
    assert time.monotonic() - t < 30
    assert s.interrupted == sig.name and s.exit_status == 130
    status = {r.name: r.status for r in s.results}
    assert status == {"done": "ok", "foreground sleeper": f"INTERRUPTED ({sig.name})",
                      "background sleeper": f"INTERRUPTED ({sig.name})"}
    for pid in pids(fg) + pids(bg):
        assert not full_run.alive(pid), pid
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"Interrupted by {sig.name}" in summary and "exit status 130" in summary
    assert signal.getsignal(sig) == old
