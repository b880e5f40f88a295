"""Which estimator, at what cost: every log-density estimator of the package side by side, in one run.

Three questions, one JSON (``diffdens/_data/benchmarks/estimators_<device>.json``; ``<device>`` is ``cpu`` or e.g. ``h100``):

1. **Equal-accuracy cost.** On an exact-score Gaussian mixture (VP SDE; ``dd.standard_mixture("2d"/"9d")``,
   ``dd.random_mixture`` for D = 50, 100) each estimator's budget knob is swept (PF-ODE tolerance or probe count,
   ELBO time samples, path-integral throws, augmented-SDE steps); for every budget the RMS error against the exact
   log p over ``n`` points and the steady-state wall time per point (batched, compilation excluded) are recorded,
   and for each target |error| the cheapest budget that reaches it. The augmented SDE (``dd.sample_with_log_prob``)
   estimates log p at its own samples, so its error is r0 - log p(x0) over ``n`` samples.
2. **Network-limited throughput.** With the package's score MLP (random weights, ``common.random_mlp_score``), each
   estimator's score evaluations per second as a fraction of the bare batched forward throughput of the same MLP
   in the same run. One PF-ODE "evaluation" (NFE) includes its divergence (D JVPs exact, one per probe Hutchinson),
   so its fraction is expected below 1 by about that factor; ELBO counts its eps-correction evaluations too.
3. **One point at a time vs batched** (``000_8c59016f91bb37e4.txt`` Fig. 6 timed one point at a time): time per point
   calling the estimator on single points in a loop vs on a batch, same MLP, same budget.

Estimators missing from the installed package are recorded as "not available". Points are sharded over all visible
devices with ``dd.shard_points`` (one device: unchanged).

    python benchmarks/estimators.py                # quick sizes, CPU here         -> diffdens/_data/benchmarks/estimators_cpu.json
    python benchmarks/estimators.py --size full    # full sizes, on the H100 machine -> diffdens/_data/benchmarks/estimators_h100.json
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import jax.numpy as jnp

from common import (LEARNED_9D, dd, git_commit, interleaved, learned_9d, meta, random_mlp_score, ratio, size_option,
                    table, write)

T0 = 1e-5
TARGETS = (1.0, 0.3, 0.1, 0.03)
REF_TOL = 1e-6  # the reference of a learned score: exact-divergence PF-ODE of the same model at rtol = atol = 1e-6

# exact: dims with the mixture's exact score; learned: dims with a learned score (D = 9 only: chapter 3's call,
# trained with learned_epochs / learned_n); n points per cell for the errors, all of them timed in >= 5
# interleaved rounds per (D, score) setting on the same points; all_dims: the dims where every estimator runs (elsewhere
# the importance-sampled ELBOs and the entropy-controlled path integral, near-duplicates, are left out; with a learned
# score only the importance-sampled DSM ELBO of them runs);
# thr_estimators: the estimators of the throughput and single-vs-batched tables (None: all).
OPTIONAL = ("elbo_dsm_is", "elbo_ism_is", "path_integral_entropy")
SIZES = {
    "quick": dict(dims=(2, 9, 50), learned_dims=(9,), learned_n=LEARNED_9D["n_data"],
                  learned_epochs=LEARNED_9D["epochs"], n=256, rounds=5, max_call_s=90.0, thr_dims=(9,), thr_n=32,
                  thr_forward_batch=8192, single_k=8, batch_n=64,
                  all_dims=(9,), thr_estimators=("pf_ode_exact", "pf_ode_hutchinson", "path_integral_score")),
    "full": dict(dims=(2, 9, 50, 100), learned_dims=(9,), learned_n=LEARNED_9D["n_data"],
                 learned_epochs=LEARNED_9D["epochs"], n=1024, rounds=7, all_dims=(2, 9, 50, 100), thr_estimators=None,
                 max_call_s=120.0, thr_dims=(9, 100), thr_n=1024, thr_forward_batch=262_144, single_k=16,
                 batch_n=4096),
    "smoke": dict(dims=(2,), learned_dims=(9,), learned_n=1024, learned_epochs=1, n=8, rounds=5, all_dims=(9,),
                  thr_estimators=("pf_ode_exact", "augmented_r0"),
                  max_call_s=5.0, thr_dims=(9,), thr_n=4, thr_forward_batch=256, single_k=1, batch_n=4),
}

# name -> (package function, fixed kwargs, budget kwarg, {profile/score: budgets})
_MC = {"quick": (300, 3000), "quick_learned": (300, 3000), "full": (100, 1000, 10_000, 100_000),
       "full_learned": (100, 1000, 10_000, 100_000), "smoke": (10,), "smoke_learned": (10,)}
ESTIMATORS = {
    "pf_ode_exact": ("ode_log_prob", dict(divergence="exact"), "tol",
                     {"quick": (1e-2, 1e-3, 1e-4, 1e-5), "quick_learned": (1e-2, 1e-3, 1e-4),
                      "full": (1e-2, 1e-3, 1e-4, 1e-5), "full_learned": (1e-2, 1e-3, 1e-4, 1e-5),
                      "smoke": (1e-2,), "smoke_learned": (1e-2,)}),
    "pf_ode_hutchinson": ("ode_log_prob", dict(solve=dd.SolveOptions(rtol=1e-4, atol=1e-4)), "n_probes",
                          {"quick": (1, 16, 128), "quick_learned": (4, 64), "full": (1, 4, 16, 64, 256, 1024),
                           "full_learned": (1, 4, 16, 64, 256, 1024), "smoke": (2,), "smoke_learned": (2,)}),
    "elbo_dsm": ("elbo", dict(form="dsm", importance_sampling=False), "n_times", _MC),
    "elbo_dsm_is": ("elbo", dict(form="dsm", importance_sampling=True), "n_times", _MC),
    "elbo_ism": ("elbo", dict(form="ism", importance_sampling=False), "n_times", _MC),
    "elbo_ism_is": ("elbo", dict(form="ism", importance_sampling=True), "n_times", _MC),
    "path_integral_score": ("path_integral_log_prob", dict(control="score"), "n_throws",
                            {**_MC, "full": (100, 1000, 10_000, 100_000, 1_000_000)}),
    "path_integral_entropy": ("path_integral_log_prob", dict(control="entropy"), "n_throws",
                              {**_MC, "full": (100, 1000, 10_000, 100_000, 1_000_000)}),
    "augmented_r0": ("sample_with_log_prob", {}, "n_steps",
                     {"quick": (100, 1000), "quick_learned": (100, 1000), "full": (30, 100, 300, 1000, 3000),
                      "full_learned": (30, 100, 300, 1000, 3000), "smoke": (10,), "smoke_learned": (10,)}),
}
# budget used for throughput and one-at-a-time vs batched
MID = {"pf_ode_exact": 1e-4, "pf_ode_hutchinson": 1, "elbo_dsm": 1000, "elbo_dsm_is": 1000, "elbo_ism": 1000,
       "elbo_ism_is": 1000, "path_integral_score": 1000, "path_integral_entropy": 1000, "augmented_r0": 300}


def available(name):
    return getattr(dd, ESTIMATORS[name][0], None) is not None


def runner(name, budget, score, sde):
    """A zero-argument-free callable (x, key) -> (values, x_used, nfe or None, stderr or None)."""
    fname, fixed, knob, _ = ESTIMATORS[name]
    fn = getattr(dd, fname)
    kw = dict(fixed, t0=T0)
    if knob == "tol":
        kw.update(solve=dd.SolveOptions(rtol=budget, atol=budget))
    elif knob == "n_probes":
        kw.update(divergence=dd.Hutchinson(n_probes=budget))
    else:
        kw[knob] = budget
    if fname == "sample_with_log_prob":
        # a sampler: it draws its own points (x only sets the shape); compiled once per shape inside the package
        def run(x, key):
            out = fn(score, sde, key, x.shape, **kw)
            return out.log_prob, out.x, out.nfe, None
        return run
    if name == "path_integral_entropy":
        score = dd.entropy_from_score(score, sde)
    fn = dd.shard_points(fn) if hasattr(dd, "shard_points") else fn

    def run(x, key):
        est = fn(score, sde, x, key=key, **kw)
        return est.value, x, est.nfe, est.stderr
    return run


def mixture(D):
    if D in (2, 9):
        return dd.standard_mixture(f"{D}d")
    return dd.random_mixture(jax.random.key(D), 4, D)


def _stats(err):
    """RMS and mean of per-point errors with their standard errors (RMS by the delta method on the mean square)."""
    err = np.asarray(err, np.float64)
    n = len(err)
    rms = float(np.sqrt(np.mean(err**2)))
    se_ms = float(np.std(err**2, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"rms_error": rms, "rms_error_stderr": se_ms / (2 * rms) if rms > 0 else 0.0, "mean_error": float(np.mean(err)),
            "mean_error_stderr": float(np.std(err, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")}


def equal_accuracy(sz, prof):
    """Rows (one per D, score, estimator, budget) and the cheapest budget per target. For every (D, score) setting:
    each estimator and budget is called once on the n points (its errors; that call compiles), then all of them are
    timed against each other in interleaved rounds (common.interleaved) on the same points."""
    sde = dd.VPSDE()
    rows, summary, learned_info = [], [], {}
    settings = [(D, "exact") for D in sz["dims"]] + [(D, "learned") for D in sz["learned_dims"]]
    for D, kind in settings:
        mix = mixture(D)
        x = mix.sample(jax.random.key(100 + D), sz["n"])
        truth = lambda z: np.asarray(mix.log_prob(z), np.float64)  # noqa: E731
        if kind == "exact":
            score = mix.diffuse(sde).score
            reference = truth
        else:
            model, _, hist, t_train = learned_9d(sz["learned_n"], sz["learned_epochs"])
            score = model.score
            ode_ref = dd.shard_points(dd.ode_log_prob) if hasattr(dd, "shard_points") else dd.ode_log_prob

            def reference(z, score=score, ode_ref=ode_ref):
                est = ode_ref(score, sde, jnp.asarray(z), divergence="exact", t0=T0,
                              solve=dd.SolveOptions(rtol=REF_TOL, atol=REF_TOL))
                return np.asarray(est.value, np.float64)

            ref_x = reference(x)
            ref_err = _stats(ref_x - truth(x))
            learned_info[D] = {"n_data": sz["learned_n"], "epochs": sz["learned_epochs"], "steps": int(hist["steps"]),
                               "train_s": t_train, "reference": f"exact-divergence PF-ODE, rtol = atol = {REF_TOL:g}",
                               "reference_vs_truth": ref_err}
            print(f"learned D={D}: reference vs exact log p {ref_err}", flush=True)
        timing_fns, cell_rows = {}, []
        for name, (fname, _, knob, budgets) in ESTIMATORS.items():
            if name in OPTIONAL and not (D in sz["all_dims"] and (kind == "exact" or name == "elbo_dsm_is")):
                continue
            if not available(name):
                rows.append({"D": D, "score": kind, "estimator": name, "status": f"not available (dd.{fname})"})
                continue
            for b in budgets[prof if kind == "exact" else f"{prof}_learned"]:
                run = runner(name, b, score, sde)
                try:
                    t = time.perf_counter()
                    val, x_used, nfe, se = run(x, jax.random.key(7))
                    jax.block_until_ready(val)
                    first = time.perf_counter() - t
                except Exception as e:  # recorded, not fatal
                    rows.append({"D": D, "score": kind, "estimator": name, "budget": b,
                                 "status": f"failed ({type(e).__name__}: {str(e)[:160]})"})
                    break
                val = np.asarray(val, np.float64)
                if kind == "exact" or name != "augmented_r0":
                    ref = reference(x) if kind == "exact" else ref_x
                else:
                    ref = reference(x_used)  # the sampler's own points
                r = {"D": D, "score": kind, "estimator": name, "knob": knob, "budget": b, "n": int(val.shape[0]),
                     **_stats(val - ref)}
                # per-point errors (4 decimals), for paired comparisons of two rows on the same points
                r["errors"] = [round(float(e), 4) for e in (val - ref)]
                if kind == "learned":
                    r["rms_error_vs_truth"] = _stats(val - truth(x_used))["rms_error"]
                if se is not None:
                    r["mean_stderr"] = float(np.nanmean(np.asarray(se)))
                if nfe is not None:
                    r["mean_nfe"] = float(np.mean(np.asarray(nfe)))
                timing_fns[(name, b)] = (lambda run=run: run(x, jax.random.key(8))[0])  # same shape: no recompile
                rows.append(r)
                cell_rows.append(r)
                print({k: r[k] for k in ("D", "score", "estimator", "budget", "rms_error", "rms_error_stderr")},
                      f"first call {first:.2f}s", flush=True)
                # larger budgets would only cost more: stop the sweep here (the first call includes compilation,
                # which a loaded 2-core CPU stretches to tens of seconds: max_call_s leaves room for it)
                if first > sz["max_call_s"]:
                    break
        tm = interleaved(timing_fns, rounds=sz["rounds"], warm=False)
        for r in cell_rows:
            m = tm[(r["estimator"], r["budget"])]
            nt = sz["n"]
            r["s_per_point"], r["s_per_point_spread"] = m.per(nt)
            r["round_s"] = list(m.times)
        for name in ESTIMATORS:
            meas = [m for m in cell_rows if m["estimator"] == name]
            for tgt in TARGETS:
                ok = [m for m in meas if m["rms_error"] <= tgt]
                best = min(ok, key=lambda m: m["s_per_point"]) if ok else None
                summary.append({"D": D, "score": kind, "estimator": name, "target": tgt,
                                "s_per_point": None if best is None else best["s_per_point"],
                                "s_per_point_spread": None if best is None else best["s_per_point_spread"],
                                "round_s": None if best is None else best["round_s"],
                                "budget": None if best is None else best["budget"],
                                "rms_error": None if best is None else best["rms_error"],
                                "rms_error_stderr": None if best is None else best["rms_error_stderr"],
                                # reached beyond doubt: the error's upper 2-stderr end below the target
                                "resolved": None if best is None else
                                bool(best["rms_error"] + 2 * best["rms_error_stderr"] <= tgt)})
    return rows, summary, learned_info


def throughput(sz):
    """Score evaluations per second of each estimator as a fraction of the bare batched forward throughput of the
    same MLP: every estimator and the bare forward pass timed against each other in ``rounds`` interleaved rounds
    (compilation excluded), the fraction computed round by round (both times from the same round)."""
    sde = dd.VPSDE()
    rows = []
    for D in sz["thr_dims"]:
        model = random_mlp_score(D, sde, jax.random.key(D))
        score = model.score
        B = sz["thr_forward_batch"]
        xb = jax.random.normal(jax.random.key(1), (B, D))
        tb = jax.random.uniform(jax.random.key(2), (B,), minval=T0, maxval=1.0)
        fwd = jax.jit(jax.vmap(score))
        x = jax.random.normal(jax.random.key(3), (sz["thr_n"], D))
        fns, evals, meas = {"bare_forward": lambda: fwd(xb, tb)}, {"bare_forward": float(B)}, []
        for name, (fname, fixed, knob, _) in ESTIMATORS.items():
            if sz["thr_estimators"] is not None and name not in sz["thr_estimators"]:
                continue
            if not available(name):
                rows.append({"D": D, "estimator": name, "status": f"not available (dd.{fname})"})
                continue
            b = MID[name]
            run = runner(name, b, score, sde)
            try:
                val, _, nfe, _ = run(x, jax.random.key(8))  # compiles; its NFE counts the evaluations
                jax.block_until_ready(val)
            except Exception as e:
                rows.append({"D": D, "estimator": name, "status": f"failed ({type(e).__name__}: {str(e)[:160]})"})
                continue
            n = x.shape[0]
            if nfe is not None:
                evals[name] = float(np.sum(np.asarray(nfe)))
            elif fname == "elbo":
                evals[name] = n * b * (2 if fixed.get("eps_correction", True) else 1)
            else:  # path integral throws, augmented steps: one score evaluation each
                evals[name] = n * b
            fns[name] = lambda run=run: run(x, jax.random.key(8))[0]
            meas.append((name, b, n))
        tm = interleaved(fns, rounds=sz["rounds"])
        bare = tm["bare_forward"]
        bare_rate, bare_spread = bare.rate(B)
        rows.append({"D": D, "estimator": "bare_forward", "batch": B, "evals_per_s": bare_rate,
                     "evals_per_s_spread": bare_spread, "fraction": 1.0})
        for name, b, n in meas:
            m = tm[name]
            fr = ratio(tm, "bare_forward", name)  # t_bare / t_estimator, per round
            scale = evals[name] / B
            per_point, per_point_spread = m.per(n)
            r = {"D": D, "estimator": name, "budget": b, "n": n, "evals_per_s": evals[name] / m.median,
                 "fraction": fr["median"] * scale, "fraction_spread": [v * scale for v in fr["spread"]],
                 "s_per_point": per_point, "s_per_point_spread": per_point_spread}
            rows.append(r)
            print(r, flush=True)
    return rows


def single_vs_batched(sz):
    """Time per point calling each estimator on ``single_k`` single points in a loop vs once on a batch of
    ``batch_n``: the loop and the batched call timed against each other in ``rounds`` interleaved rounds (both
    shapes compiled first), the speedup computed round by round."""
    sde = dd.VPSDE()
    D = 9
    model = random_mlp_score(D, sde, jax.random.key(D))
    rows = []
    xs = jax.random.normal(jax.random.key(4), (sz["batch_n"], D))
    k, nb = sz["single_k"], sz["batch_n"]
    for name, (fname, _, _, _) in ESTIMATORS.items():
        if sz["thr_estimators"] is not None and name not in sz["thr_estimators"]:
            continue
        if not available(name):
            rows.append({"estimator": name, "status": f"not available (dd.{fname})"})
            continue
        run = runner(name, MID[name], model.score, sde)

        def loop(run=run):
            return [run(xs[i:i + 1], jax.random.key(i))[0] for i in range(k)]

        try:
            tm = interleaved({"batched": lambda run=run: run(xs, jax.random.key(9))[0], "single": loop},
                             rounds=sz["rounds"])
        except Exception as e:
            rows.append({"estimator": name, "status": f"failed ({type(e).__name__}: {str(e)[:160]})"})
            continue
        sp = ratio(tm, "single", "batched")  # (k single calls) / (one batch), per round
        f = nb / k
        (single, single_spread), (batched, batched_spread) = tm["single"].per(k), tm["batched"].per(nb)
        r = {"estimator": name, "D": D, "budget": MID[name], "batch_n": nb, "single_k": k,
             "s_per_point_single": single, "s_per_point_single_spread": single_spread,
             "s_per_point_batched": batched, "s_per_point_batched_spread": batched_spread,
             "speedup": sp["median"] * f, "speedup_spread": [v * f for v in sp["spread"]]}
        rows.append(r)
        print(r, flush=True)
    return rows


def sampling_overhead(sz):
    """``004`` claims the augmented SDE tracks log p "for no extra cost": time of dd.sample_with_log_prob over the
    time of plain reverse-SDE sampling (dd.reverse_sde_sample), same MLP, steps and batch, both warm."""
    if not (hasattr(dd, "sample_with_log_prob") and hasattr(dd, "reverse_sde_sample")):
        return {"status": "not available"}
    sde = dd.VPSDE()
    D, n, steps = 9, sz["batch_n"], MID["augmented_r0"]
    score = random_mlp_score(D, sde, jax.random.key(D)).score
    aug = lambda k: dd.sample_with_log_prob(score, sde, k, (n, D), n_steps=steps, t0=T0)  # noqa: E731
    plain = lambda k: dd.reverse_sde_sample(score, sde, k, (n, D), n_steps=steps, t0=T0)  # noqa: E731
    out = {"D": D, "n": n, "n_steps": steps}
    tm = interleaved({"augmented_s": lambda: aug(jax.random.key(1)), "plain_s": lambda: plain(jax.random.key(1))},
                     rounds=sz["rounds"])
    for k, m in tm.items():
        out[k], out[f"{k}_spread"] = m.median, m.spread()
    rt = ratio(tm, "augmented_s", "plain_s")
    out["ratio"], out["ratio_spread"] = rt["median"], rt["spread"]
    print(out, flush=True)
    return out


def fmt(v):
    if v is None:
        return "-"
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def main():
    ap = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, checks the code paths; writes nothing")
    a = ap.parse_args()
    prof = "smoke" if a.smoke else "full" if a.size == "full" else "quick"
    sz = SIZES[prof]
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    acc_rows, acc_summary, learned_info = equal_accuracy(sz, prof)
    thr = throughput(sz)
    sb = single_vs_batched(sz)
    so = sampling_overhead(sz)
    payload = {"meta": meta(profile=prof, t0=T0, sde="VP", targets=list(TARGETS), mid_budgets=MID,
                            budgets={k: list(v[3][prof]) for k, v in ESTIMATORS.items()},
                            budgets_learned={k: list(v[3][f"{prof}_learned"]) for k, v in ESTIMATORS.items()},
                            errors=("score 'exact': error against the mixture's exact log p; score 'learned': error "
                                    f"against the exact-divergence PF-ODE of the same learned model at rtol = atol = "
                                    f"{REF_TOL:g} (rms_error_vs_truth: against the mixture's exact log p)"),
                            timing=(f"s_per_point: median over {sz['rounds']} interleaved rounds (all estimators and "
                                    "budgets of one (D, score) setting timed in every round, order rotated) of one "
                                    "batched call on the n points, compilation excluded; s_per_point_spread: "
                                    "[fastest, slowest] round; round_s: the rounds"),
                            learned=learned_info,
                            net="MLP 3x128 random weights (throughput, single vs batched)", **sz),
               "available": {k: available(k) for k in ESTIMATORS},
               "equal_accuracy": acc_rows, "equal_accuracy_summary": acc_summary, "throughput": thr,
               "single_vs_batched": sb, "sampling_overhead": so, "wall_s": time.perf_counter() - t_start,
               "loadavg_start_end": [list(load_start), list(os.getloadavg())], "git": git_commit()}
    if prof != "smoke":
        print(f"wrote {write('estimators', payload)}")
    print("\nthroughput (fraction of the bare forward throughput of the same MLP)")
    print(table([{**r, "fraction": f"{r['fraction']:.3f}" if "fraction" in r else r.get("status", "")} for r in thr],
                ["D", "estimator", "fraction"]))
    print("\none point at a time vs batched (D=9, MLP)")
    print(table([{**r, "single": fmt(r.get("s_per_point_single")), "batched": fmt(r.get("s_per_point_batched")),
                  "speedup": f"{r['speedup']:.1f}" if "speedup" in r else r.get("status", "")} for r in sb],
                ["estimator", "single", "batched", "speedup"]))
    print("\nequal-accuracy cost: wall time per point to reach RMS |error| <= target (exact-score mixture)")
    cols = ["estimator"] + [f"D={D} err<={t}" for D in sz["dims"] for t in TARGETS[:3]]
    trows = []
    for name in ESTIMATORS:
        r = {"estimator": name}
        for s in acc_summary:
            if s["estimator"] == name and s["target"] in TARGETS[:3] and s["score"] == "exact":
                r[f"D={s['D']} err<={s['target']}"] = fmt(s["s_per_point"])
        trows.append(r)
    print(table(trows, cols))


if __name__ == "__main__":
    main()
