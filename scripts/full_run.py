#!/usr/bin/env python
"""One command for a full run (issue 13; in Python since issue 22): the unit tests, every chapter executed in the
full profile (stamped with device and wall time by scripts/chapters.py) and every benchmark, all within a wall-time
budget (default 530 s: 9 minutes on one H100 with room to pack up). Results go to OUTDIR as at most 5 files:

  summary.md          one line per step (ok / FAILED / TIMEOUT / SKIPPED / INTERRUPTED, seconds) and the chapter
                      wall-time table
  full_run.log        everything the steps printed (the unit tests' output is in tests.log)
  tests.log           the unit-test output
  notebooks.tar.gz    the refreshed notebooks/*.ipynb, and notebooks/NN_slug.failed.ipynb for a failing chapter
                      (executed up to its error; written to OUTDIR/failed/ during the run, packed at the end)
  benchmarks.tar.gz   diffdens/_data/benchmarks/*.json written by this run

Nothing else is written into the source tree: only the refreshed notebooks/*.ipynb and the benchmark JSON, which
are the run's results.

usage: python scripts/full_run.py OUTDIR [--quick] [options]       (--quick is --profile quick: a dry run)
On the 2-core CPU machine, give it the time the full profile needs there (up to 15 minutes per chapter), e.g.
  python scripts/full_run.py OUTDIR --budget 7200 --chapter-timeout 900 --bench-timeout 1500 --test-timeout 1800

Every option has an environment fallback (the names of the former scripts/full_run.sh): PROFILE, PYTHON, CHAPTERS,
BENCHMARKS, TESTS, TESTS_ON, BENCH_SIZE, BUDGET_S, CHAPTER_TIMEOUT_S, BENCH_TIMEOUT_S, TEST_TIMEOUT_S; an option
given on the command line wins. CHAPTERS and BENCHMARKS are whitespace-separated lists, TESTS a pytest command
line; an empty value selects nothing.

Each step is a subprocess in its own process group with a time limit (the smaller of its timeout and the budget
left; a step is skipped when less than 15 s is left). On a timeout the whole group is sent SIGTERM, then SIGKILL;
a failing or timed-out step is reported and the run goes on. On SIGINT or SIGTERM (Ctrl-C) the running steps'
process groups are killed the same way, the summary so far is written and the exit status is 130. Otherwise the
exit status is 1 if any step failed, was cut or was skipped, else 0.

Benchmark sizes are explicit: every benchmarks/NAME.py takes --size cpu|full, and this script passes
--bench-size (auto: full where a GPU is present and the profile is full, cpu otherwise).

Works without a Jupyter installation: if nbclient/jupytext/ipykernel are missing and .whl/ holds their wheels
(../shared/gpu/jupyter-wheels.sh pytest pytest-timeout pytest-xdist), they are installed into /tmp/site first.
Importable: ``main(argv, environ)`` is the command line, ``run(Config(...))`` returns the ``Summary``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BENCHMARKS = ("estimators", "ode_speed", "front_door", "path_integral_speed", "augmented_speed",
                      "train_throughput", "baselines")
PROFILES = ("full", "quick")
BENCH_SIZES = ("auto", "full", "cpu")
TESTS_ON = ("auto", "cpu", "device")
MIN_STEP_S = 15  # a step is skipped when less of the budget is left
BACKGROUND_MARGIN_S = 20  # the background unit tests end this long before the budget does
SITE = Path("/tmp/site")  # where Jupyter wheels from .whl/ are installed
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@dataclasses.dataclass
class Config:
    """What a full run does. ``chapters=None``: every notebooks/[0-9]*.md; ``tests``: pytest arguments, empty to
    skip the unit tests; ``gpu=None``: detect with ``nvidia-smi -L``; ``setup=False`` skips the environment step
    (Jupyter wheels, the version/device line in the log)."""

    outdir: Path
    profile: str = "full"
    python: str = sys.executable
    chapters: list[str] | None = None
    benchmarks: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    tests: list[str] = dataclasses.field(default_factory=lambda: ["tests"])
    tests_on: str = "auto"
    bench_size: str = "auto"
    budget_s: float = 530.0
    chapter_timeout_s: float = 240.0
    bench_timeout_s: float = 180.0
    test_timeout_s: float = 420.0
    kill_grace_s: float = 15.0  # SIGTERM to a step's process group, SIGKILL this much later
    gpu: bool | None = None
    setup: bool = True
    root: Path = ROOT

    def validate(self) -> None:
        for value, allowed, name in ((self.profile, PROFILES, "PROFILE (--profile)"),
                                     (self.bench_size, BENCH_SIZES, "BENCH_SIZE (--bench-size)"),
                                     (self.tests_on, TESTS_ON, "TESTS_ON (--tests-on)")):
            if value not in allowed:
                raise ValueError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
        for name in ("budget_s", "chapter_timeout_s", "bench_timeout_s", "test_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


@dataclasses.dataclass
class Step:
    """One subprocess of the run. ``env``: variables set on top of the run's environment; ``log``: the file its
    output goes to (default OUTDIR/full_run.log); ``background``: started at once and waited for after the last
    foreground step (the unit tests on the CPU beside the chapters)."""

    name: str
    cmd: list[str]
    limit_s: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: Path | None = None
    log: Path | None = None
    background: bool = False


@dataclasses.dataclass
class Result:
    name: str
    status: str  # ok, FAILED (...), TIMEOUT after N s, SKIPPED (budget), INTERRUPTED (SIGINT)
    seconds: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass
class Summary:
    title: str
    results: list[Result]
    notebooks: list[str] = dataclasses.field(default_factory=list)
    benchmark_files: list[str] = dataclasses.field(default_factory=list)
    stamps: str = ""
    total_s: float = 0.0
    interrupted: str | None = None  # the signal's name

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if any(not r.ok for r in self.results) else 0

    def markdown(self) -> str:
        lines = [self.title, "", "| step | status | seconds |", "|---|---|---:|"]
        for r in self.results:
            status = f"{r.status}: {r.note}" if r.note else r.status
            lines.append(f"| {r.name} | {status.replace('|', '/')} | {r.seconds:.0f} |")
        lines.append("")
        if self.stamps:
            lines += ["Chapter stamps after the run (`python scripts/chapters.py times`):", "", self.stamps, ""]
        lines.append(f"Notebooks written: {' '.join(self.notebooks)}")
        lines.append(f"Benchmark results written: {' '.join(self.benchmark_files)}")
        if self.interrupted:
            lines.append(f"Interrupted by {self.interrupted}.")
        lines.append(f"Total wall time: {self.total_s:.0f} s; exit status {self.exit_status}")
        return "\n".join(lines) + "\n"


class Interrupted(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler while a run is in progress."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- process groups ----------------------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None where it is gone (or /proc is missing)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    st = _proc_stat(pid)
    if st is not None:
        return st[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path("/proc").is_dir() is False  # no /proc: trust kill(0)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; [] elsewhere). A Jupyter kernel runs in a session of its own, so
    killing a chapter's process group alone would leave it to its parent-poller."""
    children: dict[int, list[int]] = {}
    for d in glob.glob("/proc/[0-9]*"):
        st = _proc_stat(int(d[6:]))
        if st is not None:
            children.setdefault(st[1], []).append(int(d[6:]))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group led by ``proc`` and every descendant, SIGKILL what is left after ``grace_s``."""
    pids = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (proc.poll() is None or any(alive(p) for p in pids)):
                time.sleep(0.05)
    proc.wait()


# --- the run -----------------------------------------------------------------------------------------------------

class _Run:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root = Path(cfg.root).resolve()
        self.out = Path(cfg.outdir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = self.out / "full_run.log"
        self.logfile.write_text("")
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.results: list[Result] = []
        self.live: dict[subprocess.Popen, tuple[Step, float]] = {}  # running steps: (step, start time)
        self.background: list[tuple[Step, subprocess.Popen, float, float, threading.Timer, list]] = []
        self.signal: int | None = None
        self.critical = False  # while True a signal is recorded, not raised
        self.work = Path(tempfile.mkdtemp(prefix="full_run."))
        self.env = dict(os.environ)
        self.env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        self._prepend("PYTHONPATH", str(self.root))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=self.root, capture_output=True,
                                text=True).stdout.strip() or "?"
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.summary = Summary(f"# full run ({cfg.profile} profile), started {started}, commit {commit}", self.results)

    # helpers
    def _prepend(self, var: str, value: str) -> None:
        self.env[var] = value + (os.pathsep + self.env[var] if self.env.get(var) else "")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.cfg.budget_s - self.elapsed()

    def log(self, msg: str) -> None:
        line = f"[{self.elapsed():.0f}s] {msg}"
        print(line, flush=True)
        with open(self.logfile, "a") as f:
            f.write(line + "\n")

    def add(self, r: Result) -> None:
        self.results.append(r)
        self.write_summary()

    def write_summary(self) -> None:
        self.summary.total_s = self.elapsed()
        (self.out / "summary.md").write_text(self.summary.markdown())

    def on_signal(self, signum, frame=None) -> None:
        """The SIGINT/SIGTERM handler: raise Interrupted in the main thread (once; later signals only recorded)."""
        first = self.signal is None
        self.signal = self.signal or signum
        if first and not self.critical:
            self.critical = True
            raise Interrupted(signum)

    @contextlib.contextmanager
    def uninterrupted(self):
        """A signal arriving inside is recorded and raised as Interrupted on leaving (unless already handled)."""
        was = self.critical
        self.critical = True
        try:
            yield
        finally:
            if not was:
                self.critical = False
                if self.signal is not None:
                    self.critical = True
                    raise Interrupted(self.signal)

    def _start(self, step: Step) -> subprocess.Popen:
        """Start ``step`` in a new session (its own process group), registered in ``live`` before a signal can
        interrupt."""
        with self.uninterrupted():
            with open(step.log or self.logfile, "a") as f:
                proc = subprocess.Popen(step.cmd, cwd=step.cwd or self.root, env={**self.env, **step.env},
                                        stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            self.live[proc] = (step, time.monotonic())
        return proc

    def _wait(self, proc: subprocess.Popen, timeout: float) -> int | None:
        """``proc``'s exit status, or None after killing its process group at ``timeout``."""
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with self.uninterrupted():
                kill_group(proc, self.cfg.kill_grace_s)
                rc = None
        self.live.pop(proc, None)
        return rc

    def call(self, cmd: list[str], timeout: float, **kw) -> int | None:
        """A setup command (not a summary step) under ``timeout``, output to the log; its exit status (None: timed
        out)."""
        try:
            proc = self._start(Step(" ".join(cmd), cmd, timeout, **kw))
        except OSError as e:
            self.log(f"cannot start {cmd[0]}: {e}")
            return 127
        rc = self._wait(proc, timeout)
        if rc is None:
            self.log(f"timed out after {timeout:.0f}s: {' '.join(cmd)}")
        return rc

    def _status(self, rc: int | None, limit: float) -> str:
        if rc is None:
            return f"TIMEOUT after {limit:.0f}s"
        return "ok" if rc == 0 else f"FAILED (exit {rc})"

    def run_step(self, step: Step) -> Result:
        left = self.left()
        if left < MIN_STEP_S:
            self.log(f"SKIPPED {step.name} (budget spent)")
            r = Result(step.name, "SKIPPED (budget)", 0.0)
            self.add(r)
            return r
        limit = min(step.limit_s, left)
        self.log(f"START {step.name} (limit {limit:.0f}s)")
        t = time.monotonic()
        try:
            proc = self._start(step)
        except OSError as e:
            self.log(f"FAILED {step.name}: cannot start: {e}")
            r = Result(step.name, f"FAILED (cannot start: {e.strerror or e})", 0.0)
            self.add(r)
            return r
        rc = self._wait(proc, limit)
        r = Result(step.name, self._status(rc, limit), time.monotonic() - t, _pytest_line(step.log))
        self.log(f"END {step.name}: {r.status} in {r.seconds:.0f}s")
        self.add(r)
        return r

    def start_background(self, step: Step) -> None:
        limit = min(step.limit_s, self.left() - BACKGROUND_MARGIN_S)
        if limit < MIN_STEP_S:
            self.log(f"SKIPPED {step.name} (budget spent)")
            self.add(Result(step.name, "SKIPPED (budget)", 0.0))
            return
        self.log(f"START {step.name} in the background (limit {limit:.0f}s): {shlex.join(step.cmd)}")
        try:
            proc = self._start(step)
        except OSError as e:
            self.log(f"FAILED {step.name}: cannot start: {e}")
            self.add(Result(step.name, f"FAILED (cannot start: {e.strerror or e})", 0.0))
            return
        expired: list[bool] = []

        def expire():
            if proc.poll() is None:
                expired.append(True)
                kill_group(proc, self.cfg.kill_grace_s)

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        self.background.append((step, proc, time.monotonic(), limit, timer, expired))

    def wait_background(self) -> None:
        while self.background:
            step, proc, t, limit, timer, expired = self.background[0]
            rc = proc.wait()  # its timer ends it within its limit
            timer.cancel()
            self.background.pop(0)
            self.live.pop(proc, None)
            r = Result(step.name, self._status(None if expired else rc, limit), time.monotonic() - t,
                       _pytest_line(step.log))
            self.log(f"END {step.name}: {r.status} in {r.seconds:.0f}s" + (f": {r.note}" if r.note else ""))
            self.add(r)

    def kill_all(self, grace_s: float) -> None:
        for _, _, _, _, timer, _ in self.background:
            timer.cancel()
        for proc, (step, t) in list(self.live.items()):
            if proc.poll() is None:
                self.log(f"killing {step.name} (process group {proc.pid})")
            kill_group(proc, grace_s)
            if not any(r.name == step.name for r in self.results):
                self.results.append(Result(step.name, f"INTERRUPTED ({self.summary.interrupted or 'error'})",
                                           time.monotonic() - t))
        self.live.clear()
        self.background.clear()

    # phases
    def setup(self) -> None:
        """Jupyter pieces from .whl/ where missing (the GPU machine has JAX but no Jupyter); versions and devices."""
        py = self.cfg.python
        if self.call([py, "-c", "import nbclient, jupytext, ipykernel, nbformat"], 120) != 0:
            wheels = sorted(glob.glob(str(self.root / ".whl" / "*.whl")))
            if wheels:
                self.log(f"installing Jupyter wheels from .whl/ into {SITE}")
                self.call([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(SITE), *wheels], 300)
                self._prepend("PYTHONPATH", str(SITE))
                self._prepend("PATH", str(SITE / "bin"))
                self._prepend("PYTHONPATH", str(self.root))  # the checkout first
                self.call([py, "-m", "ipykernel", "install", "--user", "--name", "python3"], 120)
            else:
                self.log("nbclient/jupytext/ipykernel missing and no .whl/: run "
                         "../shared/gpu/jupyter-wheels.sh pytest pytest-timeout pytest-xdist")
        self.call([py, "-c", "import jax, platform; print('python', platform.python_version(), 'jax', "
                             "jax.__version__, 'devices', jax.devices())"], 180)

    def has_gpu(self) -> bool:
        if self.cfg.gpu is not None:
            return self.cfg.gpu
        return shutil.which("nvidia-smi") is not None and self.call(["nvidia-smi", "-L"], 60) == 0

    def plan(self) -> list[Step]:
        """The steps of a full run: unit tests (in the background on the CPU, from a copy of the tree, where a GPU
        is present), benchmarks, then chapters (the benchmark chapter reads the JSON the benchmarks write)."""
        cfg, py = self.cfg, self.cfg.python
        gpu = self.has_gpu()
        tests_on = cfg.tests_on if cfg.tests_on != "auto" else ("cpu" if gpu else "device")
        size = cfg.bench_size if cfg.bench_size != "auto" else ("full" if gpu and cfg.profile == "full" else "cpu")
        self.log(f"benchmark sizes: {size} (--size {size})")
        steps: list[Step] = []
        if cfg.tests:
            steps += self._test_steps(tests_on)
        # the benchmarks first: chapter 13 reads the JSON they write, so it must see this run's results
        for b in cfg.benchmarks:
            name = Path(b).stem
            f = self.root / "benchmarks" / f"{name}.py"
            cmd = [py, str(f.relative_to(self.root)), "--size", size] if f.is_file() else []
            steps.append(Step(f"benchmark {name} --size {size}", cmd, cfg.bench_timeout_s))
        failed_dir = self.out / "failed"
        for md in self._chapters():
            cmd = [py, "scripts/chapters.py", "refresh", "--profile", cfg.profile, "--failed-dir", str(failed_dir),
                   str(md)] if md.is_file() else []
            steps.append(Step(f"chapter {md.stem}", cmd, cfg.chapter_timeout_s))
        return steps

    def _chapters(self) -> list[Path]:
        if self.cfg.chapters is None:
            return sorted(self.root.glob("notebooks/[0-9]*.md"))
        out = []
        for pat in self.cfg.chapters:
            p = Path(pat) if Path(pat).is_absolute() else self.root / pat
            out += [Path(m) for m in sorted(glob.glob(str(p)))] or [p]  # a missing one fails as a step
        return out

    def _test_steps(self, tests_on: str) -> list[Step]:
        py, log = self.cfg.python, self.out / "tests.log"
        if self.call([py, "-c", "import pytest"], 120) != 0:
            self.log("FAILED unit tests: pytest is not installed")
            self.add(Result("unit tests", "FAILED (no pytest)", 0.0))
            return []
        extra = ["-n", "4", "--dist", "loadfile"] if self.call([py, "-c", "import xdist"], 120) == 0 else []
        if self.call([py, "-c", "import pytest_timeout"], 120) == 0:
            extra.append("--timeout=300")
        cmd = [py, "-m", "pytest", "-q", *extra, "-p", "no:cacheprovider", *self.cfg.tests]
        if tests_on == "cpu":
            # from a copy of the tree, so that the chapters refreshed meanwhile are not read half-written
            tree = self.work / "tree"
            shutil.copytree(self.root, tree, ignore=shutil.ignore_patterns(
                ".git", ".whl", ".venv", "_build", ".ci-venvs", "__pycache__", ".pytest_cache"))
            return [Step("unit tests (cpu, background)", cmd, self.cfg.test_timeout_s, cwd=tree, log=log,
                         background=True, env={"JAX_PLATFORMS": "cpu", "DIFFDENS_PROFILE": "quick",
                                               "PYTHONPATH": f"{tree}{os.pathsep}{self.env['PYTHONPATH']}"})]
        return [Step("unit tests", cmd, self.cfg.test_timeout_s, log=log,
                     env={"DIFFDENS_PROFILE": "quick", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})]

    def execute(self, steps: list[Step]) -> None:
        for step in steps:
            if not step.cmd:
                self.log(f"FAILED {step.name}: missing")
                self.add(Result(step.name, "FAILED (missing)", 0.0))
            elif step.background:
                self.start_background(step)
            else:
                self.run_step(step)
        self.wait_background()

    def pack(self) -> None:
        """notebooks.tar.gz (refreshed and failed notebooks) and benchmarks.tar.gz (new JSON) into OUTDIR."""
        since = self.t0_wall - 1
        new = [p for p in sorted((self.root / "notebooks").glob("*.ipynb")) if p.stat().st_mtime >= since]
        failed_dir = self.out / "failed"
        failed = sorted(failed_dir.glob("*.ipynb")) if failed_dir.is_dir() else []
        members = [(p, str(p.relative_to(self.root))) for p in new] + [(p, f"notebooks/{p.name}") for p in failed]
        if members:
            with tarfile.open(self.out / "notebooks.tar.gz", "w:gz") as tar:
                for p, arc in members:
                    tar.add(p, arcname=arc)
        shutil.rmtree(failed_dir, ignore_errors=True)  # packed: OUTDIR keeps few files (the GPU machine returns 8)
        self.summary.notebooks = [arc for _, arc in members]
        bdir = self.root / "diffdens" / "_data" / "benchmarks"
        jsons = [p for p in sorted(bdir.glob("*.json")) if p.stat().st_mtime >= since] if bdir.is_dir() else []
        if jsons:
            with tarfile.open(self.out / "benchmarks.tar.gz", "w:gz") as tar:
                for p in jsons:
                    tar.add(p, arcname=str(p.relative_to(self.root)))
        self.summary.benchmark_files = [str(p.relative_to(self.root)) for p in jsons]

    def stamps(self) -> None:
        try:
            r = subprocess.run([self.cfg.python, "scripts/chapters.py", "times"], cwd=self.root, env=self.env,
                               capture_output=True, text=True, timeout=120)
            self.summary.stamps = (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            self.summary.stamps = "(scripts/chapters.py times timed out)"


def _pytest_line(log: Path | None) -> str:
    """The last pytest result line of ``log`` (e.g. '120 passed in 300.1s'), or ''."""
    if log is None or not Path(log).is_file():
        return ""
    lines = [ln for ln in Path(log).read_text(errors="replace").splitlines()
             if re.search(r"\b(passed|failed|error|errors|no tests ran)\b", ln)]
    return lines[-1].strip("= ").replace("|", "/") if lines else ""


def run(cfg: Config, steps: list[Step] | None = None) -> Summary:
    """Run the full run described by ``cfg`` (or the given ``steps`` instead of its plan) and return its summary,
    also written to OUTDIR/summary.md. SIGINT/SIGTERM (when called from the main thread) kill the running steps'
    process groups and end the run with ``summary.interrupted`` set (exit status 130)."""
    cfg.validate()
    r = _Run(cfg)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, r.on_signal)
    try:
        try:
            if cfg.setup:
                r.setup()
            r.execute(r.plan() if steps is None else steps)
            r.critical = True
            r.pack()
            r.stamps()
        except Interrupted as e:
            r.critical = True
            r.summary.interrupted = e.args[0]
            r.log(f"interrupted by {e.args[0]}: stopping the running steps")
            r.kill_all(grace_s=min(5.0, cfg.kill_grace_s))
            r.pack()
        if r.signal is not None and r.summary.interrupted is None:  # arrived while packing up: still reported
            r.summary.interrupted = signal.Signals(r.signal).name
        r.write_summary()
        text = r.summary.markdown()
        print(text, end="", flush=True)
        return r.summary
    finally:
        r.kill_all(grace_s=1.0)  # nothing should be left; an unexpected error must not leave children behind
        for sig, h in handlers.items():
            signal.signal(sig, h)
        shutil.rmtree(r.work, ignore_errors=True)


# --- command line ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None, environ: dict | None = None) -> Config:
    """The command line, with environment fallbacks; exits with status 2 on a bad option or value."""
    e = os.environ if environ is None else environ

    def words(name, default):
        v = e.get(name)
        return default if v is None else v.split()

    ap = argparse.ArgumentParser(prog="scripts/full_run.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path, help="where the results go (created)")
    ap.add_argument("--quick", action="store_true", help="same as --profile quick: a dry run of the plumbing")
    ap.add_argument("--profile", default=e.get("PROFILE") or "full",
                    help="full or quick (quick chapters; benchmarks at cpu size unless --bench-size full) "
                         "[env PROFILE, default full]")
    ap.add_argument("--python", default=e.get("PYTHON") or sys.executable,
                    help="the interpreter of every step [env PYTHON, default this one]")
    ap.add_argument("--chapters", nargs="*", metavar="MD", default=words("CHAPTERS", None),
                    help="chapter sources (globs, relative to the repository); none given: no chapter "
                         "[env CHAPTERS, default notebooks/[0-9]*.md]")
    ap.add_argument("--benchmarks", nargs="*", metavar="NAME", default=words("BENCHMARKS", list(DEFAULT_BENCHMARKS)),
                    help=f"benchmark names (benchmarks/NAME.py); none given: no benchmark "
                         f"[env BENCHMARKS, default {' '.join(DEFAULT_BENCHMARKS)}]")
    ap.add_argument("--tests", metavar="ARGS", default=e.get("TESTS", "tests"),
                    help="pytest arguments for the unit tests, one string; '' skips them [env TESTS, default tests]")
    ap.add_argument("--tests-on", default=e.get("TESTS_ON") or "auto",
                    help="cpu: in the background on the CPU beside the chapters, from a copy of the tree; device: "
                         "on the device before the chapters; auto: cpu where a GPU is present [env TESTS_ON]")
    ap.add_argument("--bench-size", default=e.get("BENCH_SIZE") or "auto",
                    help="the --size passed to every benchmark: full (GPU-sized: an H100 runs all six in minutes, "
                         "a 2-core CPU would need hours), cpu (the size of the committed *_cpu.json), or auto: full "
                         "where a GPU is present in the full profile, cpu otherwise [env BENCH_SIZE, default auto]")
    numbers = (("--budget", "BUDGET_S", 530, "total wall-time budget; a step gets at most what is left"),
               ("--chapter-timeout", "CHAPTER_TIMEOUT_S", 240, "seconds per chapter"),
               ("--bench-timeout", "BENCH_TIMEOUT_S", 180, "seconds per benchmark"),
               ("--test-timeout", "TEST_TIMEOUT_S", 420, "seconds for the unit tests"))
    for flag, env, default, what in numbers:
        ap.add_argument(flag, metavar="S", default=e.get(env) or default, help=f"{what} [env {env}, default {default}]")
    a = ap.parse_args(argv)
    nums = {}
    for flag, env, _, _ in numbers:
        v = getattr(a, flag[2:].replace("-", "_"))
        try:
            nums[flag] = float(v)
        except ValueError:
            ap.error(f"{env} ({flag}) must be a number of seconds, got {v!r}")
    cfg = Config(outdir=a.outdir, profile="quick" if a.quick else a.profile, python=a.python, chapters=a.chapters,
                 benchmarks=list(a.benchmarks), tests=shlex.split(a.tests), tests_on=a.tests_on,
                 bench_size=a.bench_size, budget_s=nums["--budget"], chapter_timeout_s=nums["--chapter-timeout"],
                 bench_timeout_s=nums["--bench-timeout"], test_timeout_s=nums["--test-timeout"])
    try:
        cfg.validate()
    except ValueError as err:
        ap.error(str(err))
    return cfg


def main(argv: list[str] | None = None, environ: dict | None = None) -> int:
    """The command line: parse, run, and return the exit status (0 ok, 1 a step failed, 2 usage, 130 interrupted)."""
    return run(parse_args(argv, environ)).exit_status


if __name__ == "__main__":
    sys.exit(main())
