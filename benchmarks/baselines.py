"""Baselines a user would pick instead of a diffusion model: held-out test NLL of a normalizing flow (flowjax masked
autoregressive rational-quadratic-spline flow) and a Gaussian KDE (scikit-learn ``KernelDensity``, bandwidth by 5-fold
cross-validation), trained on the same data as a diffusion model (``dd.fit_score``, VP SDE) whose test NLL is read
with the PF-ODE (``dd.ode_log_prob``) and the path-integral bound (``dd.path_integral_log_prob``); with training and
evaluation wall times. ``000_8c59016f91bb37e4.txt`` Sec. 5 asks whether a diffusion model is a better density
estimator than these at all.

Datasets (standardized with the training split's mean and std; NLL in nats per example, in standardized units, so
all methods are comparable within a dataset):
* ``mixture9d``: ``dd.standard_mixture("9d")`` samples; the exact test NLL is reported too;
* scikit-learn's ``wine`` (13-D), ``breast_cancer`` (30-D) and ``digits`` (64-D; integer pixels uniformly
  dequantized first, ``dd.uniform_dequantize``, so no pixel is constant).

Every method is scored on the same held-out evaluation subset (``n_eval`` points, paired), with the standard error
of the mean over those points; KDE and flow also on the whole test split.

    python benchmarks/baselines.py                # quick sizes, CPU   -> diffdens/_data/benchmarks/baselines_cpu.json
    python benchmarks/baselines.py --size full    # full sizes, on the H100 machine -> diffdens/_data/benchmarks/baselines_h100.json

An estimator that cannot be imported (or a flowjax that is not installed) is recorded as "not available".
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from common import LEARNED_9D, dd, git_commit, learned_9d, meta, size_option, table, timeit, write


def learned_9d_data(n):
    return dd.standard_mixture("9d").sample(jax.random.key(LEARNED_9D["data_key"]), n)

# mixture9d trains on common.learned_9d's data and its diffusion model IS common.learned_9d (chapter 3's call, cached by
# fit_score: the estimators benchmark at the same size trains it once for both); n_eval held-out points per data set
# (all of the test split where it is smaller: wine and breast_cancer); every evaluation timed over >= 5 rounds after
# a warm-up call (compilation outside the timed region). The small data sets (wine: 143 training points) keep a short
# training: at 40 epochs and 40000 examples per epoch their PF-ODE held-out NLL ran away (1e15 nats on wine, 6.5e4
# on breast_cancer), the overfitted field sending held-out trajectories off (chapter 11's runaway).
SIZES = {
    "quick": dict(n_mix_train=LEARNED_9D["n_data"], mix_epochs=LEARNED_9D["epochs"], n_mix_test=1024, n_eval=256,
                  dd_examples=20_000, dd_epochs=15,
                  flow_epochs=60, flow_layers=4, pi_throws=2000, ode_tol=1e-4, kde_grid=8, rounds=5),
    "full": dict(n_mix_train=LEARNED_9D["n_data"], mix_epochs=LEARNED_9D["epochs"], n_mix_test=4096, n_eval=1024,
                 dd_examples=200_000, dd_epochs=200,
                 flow_epochs=400, flow_layers=8, pi_throws=100_000, ode_tol=1e-5, kde_grid=30, rounds=7),
    "smoke": dict(n_mix_train=1024, mix_epochs=1, n_mix_test=64, n_eval=4, dd_examples=2000, dd_epochs=2,
                  flow_epochs=2, flow_layers=1, pi_throws=100, ode_tol=1e-3, kde_grid=3, rounds=5),  # code paths only
}


def load(name, sz, key):
    """(x_train, x_test, exact_log_prob or None), standardized by the training split."""
    from sklearn import datasets

    exact = None
    rng = np.random.default_rng(0)
    if name == "mixture9d":
        mix = dd.standard_mixture("9d")
        tr = np.asarray(learned_9d_data(sz["n_mix_train"]))  # the data of the shared learned model
        te = np.asarray(mix.sample(jax.random.fold_in(key, 2), sz["n_mix_test"]))
    else:
        if name == "digits":
            k, _, levels = dd.datasets.load_digits()
            x = np.asarray(dd.uniform_dequantize(jax.random.fold_in(key, 3), k, levels=levels, data_range=(0, levels)))
        else:
            x = getattr(datasets, f"load_{name}")().data.astype(np.float64)
        idx = rng.permutation(len(x))
        n_te = len(x) // 5
        te, tr = x[idx[:n_te]], x[idx[n_te:]]
    mu, sd = tr.mean(0), tr.std(0)
    keep = sd > 1e-8 * max(1.0, float(np.abs(tr).max()))
    if name == "mixture9d":  # keep the mixture in its own coordinates so its exact log p applies unchanged
        mu, sd = np.zeros_like(mu), np.ones_like(sd)
        exact = lambda z: np.asarray(dd.standard_mixture("9d").log_prob(jnp.asarray(z, jnp.float32)))
    tr = ((tr - mu) / sd)[:, keep].astype(np.float32)
    te = ((te - mu) / sd)[:, keep].astype(np.float32)
    return tr, te, exact


def summary(nll, points=False):
    """Mean NLL, its stderr over the points, counts; with ``points`` also the per-point NLLs (4 decimals; the same
    evaluation points for every method, in the same order, for paired comparisons)."""
    nll = np.asarray(nll, np.float64)
    ok = np.isfinite(nll)
    extra = {"nll_points": [round(float(v), 4) if np.isfinite(v) else None for v in nll]} if points else {}
    return {**extra, "nll": float(np.mean(nll[ok])) if ok.any() else None,
            "stderr": float(np.std(nll[ok], ddof=1) / np.sqrt(ok.sum())) if ok.sum() > 1 else None,
            "n": int(ok.sum()), "n_nonfinite": int((~ok).sum())}


def _timing(tm, n):
    """eval_s (median round), eval_s_spread [fastest, slowest], eval_s_per_point and its spread."""
    per_point, per_point_spread = tm.per(n)
    return {"eval_s": tm.median, "eval_s_spread": tm.spread(), "eval_s_per_point": per_point,
            "eval_s_per_point_spread": per_point_spread, "rounds": len(tm.times)}


def kde(tr, te, ev, sz):
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    t = time.perf_counter()
    grid = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": np.logspace(-1.5, 0.5, sz["kde_grid"])}, cv=5)
    grid.fit(tr)
    t_train = time.perf_counter() - t
    k = grid.best_estimator_
    nll_ev = -k.score_samples(ev)
    tm = timeit(lambda: k.score_samples(ev), rounds=sz["rounds"])
    return {"eval": summary(nll_ev, points=True), "test": summary(-k.score_samples(te)), "train_s": t_train, **_timing(tm, len(ev)),
            "bandwidth": float(k.bandwidth)}


def flow(tr, te, ev, sz, key):
    try:
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train import fit_to_data
    except ImportError as e:
        return {"status": f"not available ({e})"}
    D = tr.shape[1]
    k1, k2 = jax.random.split(key)
    f = masked_autoregressive_flow(k1, base_dist=Normal(jnp.zeros(D)), transformer=RationalQuadraticSpline(knots=8, interval=5),
                                   flow_layers=sz["flow_layers"], nn_width=max(64, 2 * D))
    t = time.perf_counter()
    f, losses = fit_to_data(k2, f, jnp.asarray(tr), learning_rate=1e-3, max_epochs=sz["flow_epochs"], max_patience=10,
                            batch_size=min(256, max(32, len(tr) // 8)), show_progress=False)
    jax.block_until_ready(jax.tree_util.tree_leaves(f))
    t_train = time.perf_counter() - t
    lp = eqx.filter_jit(lambda d, z: d.log_prob(z))
    lp = functools.partial(lp, f)
    evj = jnp.asarray(ev)
    nll_ev = -np.asarray(jax.block_until_ready(lp(evj)))  # also compiles, outside the timed rounds
    tm = timeit(lambda: lp(evj), rounds=sz["rounds"])
    return {"eval": summary(nll_ev, points=True), "test": summary(-np.asarray(lp(jnp.asarray(te)))), "train_s": t_train,
            **_timing(tm, len(ev)), "epochs_run": len(losses["train"]),
            "flow": f"MAF-RQS, {sz['flow_layers']} layers, width {max(64, 2 * D)}"}


def diffusion(tr, ev, sz, key, name):
    fit = getattr(dd, "fit_score", None)
    if fit is None:
        return {"status": "not available (dd.fit_score)"}
    sde = dd.VPSDE()
    N = len(tr)
    if name == "mixture9d":  # common.learned_9d (chapter 3's call, trained longer), shared with the estimators benchmark
        model, _, hist, t_train = learned_9d(sz["n_mix_train"], sz["mix_epochs"])
        n_throws, epochs = None, sz["mix_epochs"]
    else:
        n_throws, epochs = max(10, sz["dd_examples"] // N), sz["dd_epochs"]
        t = time.perf_counter()
        model, hist = fit(jnp.asarray(tr), sde, key=key, epochs=epochs, n_throws=n_throws,
                          batch_size=min(512, N), cache=False, progress=False)
        t_train = time.perf_counter() - t
    out = {"train_s": t_train, "n_throws": n_throws, "epochs": epochs, "steps": int(hist["steps"]),
           "final_loss": float(hist["loss"][-1])}
    x = jnp.asarray(ev)
    ests = {
        "pf_ode": ("ode_log_prob", dict(solve=dd.SolveOptions(rtol=sz["ode_tol"], atol=sz["ode_tol"]))),
        "path_integral": ("path_integral_log_prob", dict(n_throws=sz["pi_throws"])),
    }
    for label, (name, kw) in ests.items():
        fn = getattr(dd, name, None)
        if fn is None:
            out[label] = {"status": f"not available (dd.{name})"}
            continue
        fn = dd.shard_points(fn) if hasattr(dd, "shard_points") else fn
        try:
            t = time.perf_counter()
            est = fn(model.score, sde, x, key=jax.random.fold_in(key, 7), **kw)  # the values; compiles
            jax.block_until_ready(est.value)
            t_first = time.perf_counter() - t  # first call, compilation included
            tm = timeit(lambda: fn(model.score, sde, x, key=jax.random.fold_in(key, 8), **kw).value,
                        rounds=sz["rounds"])
            r = {"eval": summary(-np.asarray(est.value), points=True), **_timing(tm, len(ev)), "first_call_s": t_first}
            if est.stderr is not None:
                r["mean_per_point_mc_stderr"] = float(np.nanmean(np.asarray(est.stderr)))
            if est.nfe is not None:
                r["mean_nfe"] = float(np.mean(np.asarray(est.nfe)))
            out[label] = r
        except Exception as e:  # recorded, not fatal: one failing estimator must not lose the other rows
            out[label] = {"status": f"failed ({type(e).__name__}: {str(e)[:200]})"}
    return out


def main():
    ap = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, checks the code paths; writes nothing")
    ap.add_argument("--datasets", default="mixture9d,wine,breast_cancer,digits")
    a = ap.parse_args()
    prof = "smoke" if a.smoke else "full" if a.size == "full" else "quick"
    sz = SIZES[prof]
    key = jax.random.key(0)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    results = {}
    rows = []
    for i, name in enumerate(a.datasets.split(",")):
        k = jax.random.fold_in(key, i)
        tr, te, exact = load(name, sz, k)
        ev = te[: sz["n_eval"]]
        r = {"dim": tr.shape[1], "n_train": len(tr), "n_test": len(te), "n_eval": len(ev)}
        if exact is not None:
            r["exact"] = {"eval": summary(-exact(ev), points=True), "test": summary(-exact(te))}
        print(f"[{name}] D={tr.shape[1]} train={len(tr)} test={len(te)}", flush=True)
        r["kde"] = kde(tr, te, ev, sz)
        print(f"  kde {r['kde']['eval']}", flush=True)
        r["flow"] = flow(tr, te, ev, sz, jax.random.fold_in(k, 11))
        print(f"  flow {r['flow'].get('eval', r['flow'].get('status'))}", flush=True)
        r["diffusion"] = diffusion(tr, ev, sz, jax.random.fold_in(k, 12), name)
        print(f"  diffusion trained in {r['diffusion'].get('train_s', 0):.1f}s", flush=True)
        results[name] = r
        cands = [("exact", r.get("exact", {}), None), ("kde", r["kde"], r["kde"].get("train_s")),
                 ("flow", r["flow"], r["flow"].get("train_s"))]
        cands += [(f"diffusion/{e}", r["diffusion"].get(e, {}), r["diffusion"].get("train_s"))
                  for e in ("pf_ode", "path_integral")]
        for label, m, t_train in cands:
            if not m:
                continue
            ev_s = m.get("eval")
            rows.append({"dataset": name, "D": tr.shape[1], "method": label,
                         "test NLL (eval subset)": f"{ev_s['nll']:.3f} +- {ev_s['stderr']:.3f}" if ev_s else m.get("status", ""),
                         "train s": f"{t_train:.1f}" if t_train is not None else "",
                         "eval ms/pt": f"{1e3 * m['eval_s_per_point']:.2f}" if "eval_s_per_point" in m else ""})
    payload = {"meta": meta(profile=prof, **sz), "results": results, "rows": rows, "wall_s": time.perf_counter() - t_start,
               "loadavg_start_end": [list(load_start), list(os.getloadavg())], "git": git_commit()}
    if prof != "smoke":
        print(f"wrote {write('baselines', payload)}")
    print(table(rows, ["dataset", "D", "method", "test NLL (eval subset)", "train s", "eval ms/pt"]))


if __name__ == "__main__":
    main()
