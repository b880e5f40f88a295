"""shard_points: the sharded estimate equals the one-device estimate (exact-score mixture, 4 forced CPU devices).

The main pytest process has already initialised JAX with one CPU device, so the multi-device comparison runs in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import diffdens as dd
from diffdens.parallel import keys_independent_of_count, shard_points
from diffdens.testing import assert_agrees

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp
    import diffdens as dd
    from diffdens.estimate import Estimate
    from diffdens.parallel import shard_points

    def smoothed(score, sde, x, *, key, m=64):
        # a minimal estimator of the package's shape: per-point keys by split(key, n) and a vmap over points
        keys = jax.random.split(key, x.shape[0])
        p = MIX.diffuse(sde)
        vals = jax.vmap(lambda xx, k: p.log_prob(xx + 0.1 * jax.random.normal(k, (m, xx.shape[-1])), 0.01))(x, keys)
        return Estimate.from_samples(vals)

    sde = dd.VPSDE()
    MIX = dd.standard_mixture("2d")
    p = MIX.diffuse(sde)
    key = jax.random.key(1)
    cases = {"inline": (smoothed, {})}
    solve = dd.SolveOptions(rtol=1e-4, atol=1e-4)
    opt = {"ode_log_prob": dict(solve=solve),
           "ode_log_prob_hutchinson": dict(divergence=dd.Hutchinson(n_probes=2), solve=solve),
           "elbo": dict(n_times=64), "path_integral_log_prob": dict(n_throws=256)}
    for name, kw in opt.items():
        fn = getattr(dd, name.replace("_hutchinson", ""), None)
        if fn is not None:
            cases[name] = (fn, kw)
    out = {"n_devices": jax.device_count(), "results": {}}
    for n in (7, 8):  # 7: padded to the device count, every estimator; 8: the layout over the mesh (one case)
        x = MIX.sample(jax.random.key(0), n)
        for name, (fn, kw) in (cases.items() if n == 7 else [("inline", cases["inline"])]):
            a = fn(p.score, sde, x, key=key, **kw)
            b = shard_points(fn)(p.score, sde, x, key=key, **kw)
            out["results"][f"{name}/{n}"] = {
                "shape": list(b.value.shape),
                "max_diff": float(jnp.max(jnp.abs(a.value - b.value))),
                "max_err": float(jnp.max(jnp.abs(a.value - MIX.log_prob(x)))),
                "sharded": str(getattr(b.value.sharding, "spec", "")),
                "stderr_diff": None if a.stderr is None else float(jnp.nanmax(jnp.abs(a.stderr - b.stderr))),
            }
    print("RESULT" + json.dumps(out))
    """
)

# float32 noise for the Monte Carlo estimators; the adaptive ODE solve can flip a step acceptance when the batch
# layout changes the last bits, so its tolerance is a few times the solver's rtol (still far below its error).
TOL = {"ode_log_prob": 2e-3, "ode_log_prob_hutchinson": 2e-3}


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(ROOT),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_sharded_equals_unsharded(four_devices):
    assert four_devices["n_devices"] == 4
    res = four_devices["results"]
    assert "inline/7" in res and "inline/8" in res
    for case, r in res.items():
        name, n = case.split("/")
        assert r["shape"] == [int(n)], (case, r)
        tol = TOL.get(name, 1e-4)
        assert r["max_diff"] <= tol, (case, r)
        if r["stderr_diff"] is not None:
            assert r["stderr_diff"] <= tol, (case, r)
    # n divisible by the device count: the result stays laid out over the "points" mesh axis
    assert "points" in res["inline/8"]["sharded"], res["inline/8"]


def test_sharding_a_real_change_would_be_caught():
    """The comparison is not vacuous: a different key moves the Monte Carlo estimates far more than the tolerance."""
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 3)
    a = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(1), n_throws=256)
    b = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(2), n_throws=256)
    # another key moves the estimates by their Monte Carlo error, which is far above the sharding tolerance ...
    assert float(jnp.min(a.stderr)) > 100 * max(TOL.values()) and not jnp.array_equal(a.value, b.value)
    # ... and by no more than that error: two independent estimates of the same log p agree within their stderrs
    assert_agrees(a.value - b.value, jnp.hypot(a.stderr, b.stderr), 0.0, dof=255, what="two keys")


def test_padding_keeps_point_keys():
    assert keys_independent_of_count()
    k = jax.random.key(0)
    assert bool(jnp.all(jax.random.key_data(jax.random.split(k, 5)) == jax.random.key_data(jax.random.split(k, 8))[:5]))


def test_one_device_passthrough_and_checks():
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 3)
    f = shard_points(dd.path_integral_log_prob)
    a = f(p.score, sde, x, key=jax.random.key(1), n_throws=64)
    b = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(1), n_throws=64)
    assert jnp.array_equal(a.value, b.value)
    with pytest.raises(ValueError, match="fn"):
        shard_points(3)
    with pytest.raises(ValueError, match="devices"):
        shard_points(dd.elbo, devices=[])
    with pytest.raises(ValueError, match="x"):
        f(p.score, sde, jnp.zeros(3), key=jax.random.key(1))
