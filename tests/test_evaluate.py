"""dd.evaluate and ``python -m diffdens evaluate`` (issue 26): per-item results equal the estimator called on each item
with its own key, do not depend on the chunking, the number of processes or an interruption (SIGKILL after the
first chunk, then the same command again: nothing computed twice); a changed configuration is refused, a corrupted
chunk recomputed, bad input refused before compiled work.

Costs: one tiny model trained for one epoch, three command-line runs (a killed one, its resumption, two processes;
they share a persistent JAX compilation cache) and two in-process compilations of the batch kernel."""

from __future__ import annotations

import importlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.__main__ import parse_options

EV = importlib.import_module("diffdens.evaluate")  # the module (dd.evaluate is the function)
ROOT = pathlib.Path(__file__).resolve().parents[1]
N, CHUNK, SEED, OPTIONS = 240, 60, 3, {"n_times": 8}
KEYS = ("index", "value", "stderr", "nfe")
CLI_RTOL = 1e-6 if jax.default_backend() == "cpu" else 1e-4  # the command-line runs use the CPU (JAX_PLATFORMS=cpu)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    sde = dd.VPSDE()
    x = np.asarray(dd.standard_mixture("2d").sample(jax.random.key(0), N), np.float32)
    model, _ = dd.fit_score(x, sde, key=jax.random.key(1), epochs=1, batch_size=120, hidden=16, depth=1,
                            n_features=8, cache=False, progress=False)
    dd.save_model(model, d / "model.ckpt")
    np.save(d / "data.npy", x)
    # the uninterrupted in-process run every other run is compared with
    ref = dd.evaluate(d / "model.ckpt", d / "data.npy", d / "ref", estimator="elbo", options=OPTIONS,
                      chunk_size=CHUNK, key=SEED)
    return SimpleNamespace(dir=d, sde=sde, x=x, model=model, ckpt=d / "model.ckpt", data=d / "data.npy", ref=ref)


def _item_keys(i, p=0):
    """The documented key scheme: item i, pass p -> split(fold_in(fold_in(key, i), p)) = (dequantize, estimator)."""
    return jax.random.split(jax.random.fold_in(jax.random.fold_in(jax.random.key(SEED), i), p))


def _same(a, b, rtol=1e-6):
    """Per-item results identical: same indices, values within float rounding."""
    for k in KEYS:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if k == "index":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, equal_nan=True, err_msg=k)


def _results(out):
    with np.load(out / "results.npz") as z:
        return {k: z[k] for k in z.files}


def _cli(job, out, *extra, kill_after=None, local_devices=1):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(job.dir / "jax-cache"),  # shared: fewer compilations
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop(EV.KILL_AFTER_ENV, None)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
    if kill_after is not None:
        env[EV.KILL_AFTER_ENV] = str(kill_after)
    cmd = [sys.executable, "-m", "diffdens", "evaluate", str(job.ckpt), str(job.data), str(out), "--estimator",
           "elbo", "-o", "n_times=8", "--chunk-size", str(CHUNK), "--seed", str(SEED), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_items_equal_the_estimator_called_directly(job):
    """Item i is elbo(score, sde, x[i:i+1], key=its own key): checked on items of different chunks; the result
    object, results.npz and summary.json agree."""
    ref = job.ref
    np.testing.assert_array_equal(ref.index, np.arange(N))
    for i in (0, 59, 60, 131, N - 1):
        est = dd.elbo(job.model.score, job.sde, job.x[i:i + 1], key=_item_keys(i)[1], **OPTIONS)
        np.testing.assert_allclose(ref.value[i], est.value[0], rtol=1e-6)
        np.testing.assert_allclose(ref.stderr[i], est.stderr[0], rtol=1e-6)
    assert np.isnan(ref.nfe).all()  # the ELBO does not count score evaluations
    _same(ref._asdict(), _results(job.dir / "ref"))
    summary = json.loads((job.dir / "ref" / "summary.json").read_text())
    assert summary["n_items"] == N and summary["run"]["computed_items"] == N
    np.testing.assert_allclose(summary["value"]["mean"], ref.value.mean(), rtol=1e-9)
    lo, hi = summary["value"]["median_interval"]
    assert lo <= summary["value"]["median"] <= hi
    assert summary["config"]["options"] == OPTIONS and summary["versions"]["jax"] == jax.__version__


def test_results_do_not_depend_on_chunking(job, tmp_path):
    """Other chunk and batch boundaries (chunks of 80 items, batches of 60 inside them) give the same items."""
    other = dd.evaluate(job.ckpt, job.data, tmp_path / "out", estimator="elbo", options=OPTIONS, chunk_size=80,
                        batch_size=CHUNK, key=SEED)
    _same(other._asdict(), job.ref._asdict())


def test_cli_killed_after_first_chunk_resumes_exactly(job, tmp_path):
    """SIGKILL after the first chunk; the same command again completes, reading chunk 0 (not rewritten) and
    computing the rest once; the results equal the uninterrupted run's."""
    out = tmp_path / "out"
    killed = _cli(job, out, kill_after=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    chunks = sorted(p.name for p in (out / "chunks").glob("chunk_*.bin"))
    assert chunks == ["chunk_000000.bin"] and not (out / "results.npz").exists()
    before = (out / "chunks" / "chunk_000000.bin").stat()
    again = _cli(job, out)
    assert again.returncode == 0, again.stderr
    assert "resumed 60 items (1 chunks)" in again.stderr and "computing 180 items (3 chunks)" in again.stderr
    assert re.findall(r"chunk (\d)/4 \(items [\d-]+\) computed in", again.stderr) == ["2", "3", "4"]
    after = (out / "chunks" / "chunk_000000.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    _same(_results(out), job.ref._asdict(), CLI_RTOL)
    run = json.loads((out / "summary.json").read_text())["run"]
    assert (run["resumed_items"], run["computed_items"]) == (60, 180)


def test_cli_two_processes_equal_one(job, tmp_path):
    """--processes 2 (jax.distributed on the CPU, chunk c on process c % 2, each batch split over the process's two
    local devices by shard_points, process 0 merges) gives the single-process items."""
    out = tmp_path / "out"
    res = _cli(job, out, "--processes", "2", local_devices=2)
    assert res.returncode == 0, res.stderr
    assert "[p1] process 1/2 (2 local cpu devices)" in res.stderr and "[p0] process 0/2 (2 local" in res.stderr
    _same(_results(out), job.ref._asdict(), CLI_RTOL)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"]["processes"] == 2 and summary["config_hash"] == job.ref.summary["config_hash"]


def test_changed_configuration_is_refused(job):
    """A changed option or pass count in the same directory raises naming the change; nothing is touched."""
    out = job.dir / "ref"
    stamp = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"another configuration \(options\.n_times: 8 -> 16\)"):
        dd.evaluate(job.ckpt, job.data, out, estimator="elbo", options={"n_times": 16}, chunk_size=CHUNK, key=SEED)
    with pytest.raises(ValueError, match=r"passes: 1 -> 2"):
        dd.evaluate(job.ckpt, job.data, out, estimator="elbo", options=OPTIONS, chunk_size=CHUNK, key=SEED, passes=2)
    assert stamp == {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_corrupted_chunk_is_recomputed(job, tmp_path, caplog):
    """A truncated chunk and one with a flipped byte are detected (checksum) and recomputed; the others are read."""
    out = tmp_path / "out"
    shutil.copytree(job.dir / "ref", out)
    (out / "results.npz").unlink()
    c1, c2 = out / "chunks" / "chunk_000001.bin", out / "chunks" / "chunk_000002.bin"
    c1.write_bytes(c1.read_bytes()[:-100])
    blob = bytearray(c2.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    c2.write_bytes(bytes(blob))
    kept = (out / "chunks" / "chunk_000000.bin").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="diffdens.evaluate"):
        res = dd.evaluate(job.ckpt, job.data, out, estimator="elbo", options=OPTIONS, chunk_size=CHUNK, key=SEED)
    assert sum("checksum mismatch" in r.getMessage() for r in caplog.records) == 2
    assert res.summary["run"]["computed_items"] == 120 and res.summary["run"]["recomputed_corrupt_chunks"] == 2
    assert (out / "chunks" / "chunk_000000.bin").stat().st_mtime_ns == kept
    _same(res._asdict(), job.ref._asdict())


def test_levels_passes_and_the_pf_ode(job, tmp_path):
    """Integer data with levels: each pass dequantizes with its own key and runs the PF-ODE on it; value, stderr
    (over passes), nfe (summed) and bits/dim (dd.bits_per_dim of the value) follow from the direct calls. (Batches
    of one item: the adaptive solver turns the rounding differences of another batch shape into differences of the
    order of its tolerance, so the direct calls on one item are reproduced exactly only by batches of one.)"""
    k = np.clip(np.floor((job.x[:12] + 4.0) / 8.0 * 256), 0, 255).astype(np.int32)
    solve = dd.SolveOptions(rtol=1e-3, atol=1e-3)
    res = dd.evaluate(job.model, k, tmp_path / "out", estimator="ode_log_prob", options={"solve": solve}, key=SEED,
                      passes=2, chunk_size=5, batch_size=1, levels=256, data_range=(-4.0, 4.0))
    for i in (0, 7, 11):
        vals, nfes = [], []
        for p in range(2):
            k_deq, k_est = _item_keys(i, p)
            y = dd.uniform_dequantize(k_deq, k[i:i + 1], levels=256, data_range=(-4.0, 4.0))
            est = dd.ode_log_prob(job.model.score, job.sde, y, key=k_est, solve=solve)
            vals.append(float(est.value[0]))
            nfes.append(float(est.nfe[0]))
        np.testing.assert_allclose(res.value[i], np.mean(vals), rtol=1e-6)
        np.testing.assert_allclose(res.stderr[i], np.std(vals, ddof=1) / np.sqrt(2), rtol=1e-4, atol=1e-6)
        assert res.nfe[i] == sum(nfes)
    np.testing.assert_allclose(res.bits_per_dim, dd.bits_per_dim(res.value, 2, levels=256, data_range=(-4.0, 4.0)),
                               rtol=1e-6)
    assert set(_results(tmp_path / "out")) == set(KEYS) | {"bits_per_dim"}
    assert res.summary["bits_per_dim"]["mean"] == pytest.approx(float(res.bits_per_dim.mean()))


def test_bad_input_is_refused_before_compiled_work(job, tmp_path, monkeypatch):
    """Each bad input raises naming it, before the batch kernel runs; an existing directory is left as it was."""
    def boom(*args, **kwargs):
        raise AssertionError("compiled work started")

    monkeypatch.setattr(EV, "_batch_kernel", boom)
    run = lambda data=job.data, model=job.ckpt, out=tmp_path / "o", **kw: dd.evaluate(  # noqa: E731
        model, data, out, **{"estimator": "elbo", "options": OPTIONS, **kw})
    x = job.x[:10].copy()
    x[3, 1], x[7, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in rows 3, 7"):
        run(x)
    with pytest.raises(ValueError, match=r"data has event shape \(3,\), the model expects \(2,\)"):
        run(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"outside \{0, \.\.\., 255\} \(levels=256\) in rows 1"):
        run(np.array([[0, 1], [256, 3]]), levels=256)
    with pytest.raises(ValueError, match="data holds integers"):
        run(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="must hold integers"):
        run(job.x, levels=256)
    with pytest.raises(FileNotFoundError, match="data file"):
        run(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="model checkpoint"):
        run(model=tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="is not the given sde"):
        run(sde=dd.SubVPSDE())
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(job.ckpt.read_bytes()[:-50])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        run(model=broken)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out_dir .* not writable"):
        run(out=tmp_path / "file" / "out")
    with pytest.raises(ValueError, match="model returned a non-finite value at t="):
        run(model=lambda y, t: jnp.where(t < 0.5, jnp.nan, -y), sde=job.sde)
    with pytest.raises(ValueError, match="has no option 'n_time'"):
        run(options={"n_time": 8})
    with pytest.raises(ValueError, match="'key' is set by evaluate"):
        run(options={"key": 1})
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (job.dir / "ref").rglob("*"))
    with pytest.raises(ValueError, match="non-finite"):
        run(x, out=job.dir / "ref")
    assert before == sorted((p.name, p.stat().st_mtime_ns) for p in (job.dir / "ref").rglob("*"))


def test_cli_options_become_objects():
    """-o values are JSON where they parse; rtol/atol/max_steps build SolveOptions, hutchinson:N a Hutchinson."""
    opts = parse_options(["n_times=8", "form=dsm", "rtol=1e-3", "atol=1e-4", "divergence=hutchinson:4",
                          "eps_correction=false"])
    assert opts == {"n_times": 8, "form": "dsm", "eps_correction": False, "divergence": dd.Hutchinson(n_probes=4),
                    "solve": dd.SolveOptions(rtol=1e-3, atol=1e-4)}


def test_uniform_dequantize_under_jit():
    """The dequantization runs inside the compiled batch: under jit an out-of-range integer still raises."""
    f = jax.jit(lambda key, k: dd.uniform_dequantize(key, k, levels=4))
    y = f(jax.random.key(0), jnp.array([[0, 3]]))
    assert ((y >= jnp.array([0.0, 0.75])) & (y < jnp.array([0.25, 1.0]))).all()
    with pytest.raises(Exception, match=r"k must lie in \{0, \.\.\., 3\}"):
        jax.block_until_ready(f(jax.random.key(0), jnp.array([[0, 4]])))
