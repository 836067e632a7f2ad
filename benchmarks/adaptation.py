"""Model adaptation benchmark: a learned reconstructor trained for one CT setting, tested on shifted ones.

The model (default: the shipped learned primal-dual `jaxrecon/pretrained/lpd_quick`, quick preset:
64 x 64 images, 30 views, 91 detectors, 5% noise, trained on random ellipses) meets data from a
changed forward model (Gilton, Ongie & Willett, "Model adaptation for inverse problems in imaging",
IEEE TCI 2021):

- `views`:  20 views instead of 30 (operator known);
- `angle`:  all projection angles off by +3 degrees (offset unknown);
- `centre`: the centre of rotation shifted by 1.5 pixels (shift unknown);
- `noise`:  10% instead of 5% relative Gaussian noise (operator unchanged, known).

Rows (per shift), all tested on the modified Shepp-Logan phantom and on held-out test ellipses,
exact analytic sinograms under the shifted geometry (no inverse crime):

- naive: the trained model with the operator one believes in: the shifted operator when it is
  known (`views`, `noise`), the nominal one when the offset/shift is unknown (`angle`, `centre`;
  a reference row gives the model the *true* shifted operator);
- adapted per measurement: `adapt_to_measurement` on each test measurement alone (for an unknown
  offset/shift its parameter is first calibrated from that one measurement, `calibrate_operator`);
- adapted on the dataset: `adapt_to_dataset`'s two stages on a separate set of unlabelled
  measurements: calibrate the family parameter (`AngleOffset`, `CentreShift`; run once and shared
  by the mu grid), then adapt theta (`learn_operator=False` from the calibrated parameter); for
  the known operators only theta is adapted;
- reuse and regularise (per measurement, theta0 kept): `reuse_and_regularise`, the trained network
  in its own (nominal) setting as the regulariser of a reconstruction under the shifted operator,
  argmin_x ||y - A1 x||^2 + lam ||x - f(A0 x)||^2, from the naive reconstruction (for an unknown
  offset/shift, A1 is the per-measurement calibrated operator);
- retrained oracle: the same model (config and seed) trained with ground truth under the shifted
  operator, for the original budget (`--oracle-steps` for a stated smaller one);
- TV (PDHG) with the shifted (true) operator, weight chosen on validation ellipses under it.

Parameter rules, fixed before testing: the proximity weight mu of both adaptations is chosen among
`--mu-grid` (in units of fit0 / P: the naive data misfit over the number of parameters) and "no
adaptation" by the mean PSNR on validation ellipses under the shifted operator (per measurement:
on the first `--select-size` of them); the reuse-and-regularise weight lam among `--rr-grid` (in
units of ||A1||^2) and "not used" likewise; the TV weight likewise. Test data are never used to tune.

Checks written to the results: each method's share of the PSNR gap between naive and the
oracle (criterion: >= 1/2), and the calibrated offset/shift against the truth (criterion: within 10%).

    python benchmarks/adaptation.py                                  # shipped lpd_quick, full run
    python benchmarks/adaptation.py --checkpoint benchmarks/runs/quick/lpd --oracle-steps 1000
    python benchmarks/adaptation.py --smoke --out /tmp/adaptation_smoke   # tiny model, ~2 minutes

Oracle runs are checkpointed under --runs (default benchmarks/runs/adaptation/<shift>_<steps>) and
resumed. Writes <out>/adaptation.json, .md and .png (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrecon.adapt.adaptation import adapt_to_dataset, adapt_to_measurement, calibrate_operator, reuse_and_regularise
from jaxrecon.adapt.operators import AngleOffset, CentreShift
from jaxrecon.metrics import psnr, ssim
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform, operator_norm
from jaxrecon.solvers import tv_pdhg
from jaxrecon.train import CTData, batch_keys, default_optimizer, fit, reconstruct, reconstruction_loss_fn
from jaxrecon.train import shepp_logan_sample
from jaxrecon.train.experiment import build_model, experiment_config, load_trained, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CHECKPOINT = ROOT / "jaxrecon" / "pretrained" / "lpd_quick"
SHIFTS = ("views", "angle", "centre", "noise")
LABELS = {
    "naive": "naive",
    "naive_true": "naive, true operator (reference)",
    "measurement": "adapted per measurement",
    "rr": "reuse and regularise (theta0 kept)",
    "dataset": "adapted on the dataset",
    "oracle": "retrained oracle",
    "tv": "TV (PDHG)",
}
MIN_GAP = 0.1  # dB: below this naive-to-oracle gap the "half the gap" criterion is not decided
RECOVERY = ("measurement", "dataset", "rr")  # the rows whose share of the naive-to-oracle gap is checked
ADAPT_OFFSET = 1_000_000  # unlabelled adaptation measurements: train-split indices far beyond any training run


# --------------------------------------------------------------------------------------------------
# Shifts
# --------------------------------------------------------------------------------------------------


def make_shift(name: str, geom: ParallelBeamGeometry, noise: float, args) -> dict:
    """The shifted setting `name`: true geometry and noise, the operator the naive model is given,
    the family whose parameter `phi` is calibrated (unknown shifts) or that just wraps the known
    operator at `phi = 0`, and the true `phi` (unknown shifts)."""
    if name == "views":
        g1 = ParallelBeamGeometry.uniform(geom.shape, args.views, geom.num_detectors, dtype=geom.angles.dtype)
        return dict(name=name, label=f"{args.views} views", geometry=g1, noise=noise, nominal=g1,
                    family=CentreShift(g1), known=True, true_phi=None, unit=None)
    if name == "angle":
        g1 = geom.with_angles(geom.angles + math.radians(args.angle_deg))
        return dict(name=name, label=f"angular offset {args.angle_deg:g} deg", geometry=g1, noise=noise,
                    nominal=geom, family=AngleOffset(geom), known=False, true_phi=math.radians(args.angle_deg),
                    unit="rad", lr=args.angle_lr)
    if name == "centre":
        g1 = ParallelBeamGeometry(geom.shape, geom.angles, geom.num_detectors, geom.detector_spacing,
                                  geom.detector_offset + args.centre_shift)
        return dict(name=name, label=f"centre shift {args.centre_shift:g} px", geometry=g1, noise=noise,
                    nominal=geom, family=CentreShift(geom), known=False, true_phi=float(args.centre_shift),
                    unit="px", lr=args.centre_lr)
    if name == "noise":
        return dict(name=name, label=f"{100 * args.noise:g}% noise", geometry=geom, noise=args.noise, nominal=geom,
                    family=CentreShift(geom), known=True, true_phi=None, unit=None)
    raise ValueError(f"unknown shift {name!r}; expected one of {SHIFTS}")


# --------------------------------------------------------------------------------------------------
# Data and metrics
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _draw(data: CTData, keys):
    return jax.vmap(data.sample)(keys)


def draw(data: CTData, seed: int, split: str, start: int, count: int):
    return _draw(data, batch_keys(seed, split, start, count))


@jax.jit
def _scores(xs, refs):  # data range: that of each reference
    return jax.vmap(psnr)(xs, refs), jax.vmap(ssim)(xs, refs)


def scores(xs, refs) -> dict:
    """PSNR/SSIM of an evaluation stack: entry 0 is Shepp-Logan, the rest the test ellipses."""
    p, s = (np.asarray(v, np.float64) for v in _scores(jnp.asarray(xs, refs.dtype), refs))
    return dict(shepp_logan=float(p[0]), shepp_logan_ssim=float(s[0]), test=float(p[1:].mean()),
                test_std=float(p[1:].std()), test_ssim=float(s[1:].mean()))


def mean_psnr(xs, refs) -> float:
    return float(np.mean(np.asarray(_scores(jnp.asarray(xs, refs.dtype), refs)[0])))


def num_params(model) -> int:
    return int(sum(a.size for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))


@eqx.filter_jit
def _data_fit(model, op, ys):
    return jnp.mean(jax.vmap(lambda y: jnp.sum((y - op(model(y, op))) ** 2))(ys))


@eqx.filter_jit
def _misfits(op, xs, ys, ys_exact, xs_naive):
    sq = lambda r: jnp.sum(r**2, axis=(1, 2))
    noise = sq(ys - ys_exact)
    return dict(discretisation=sq(ys_exact - jax.vmap(op)(xs)) / noise, truth=sq(ys - jax.vmap(op)(xs)) / noise,
                naive=sq(ys - jax.vmap(op)(xs_naive)) / noise)


def misfit(model, shift, config, args) -> dict:
    """Why a data-fit loss misleads: on the validation ellipses, the misfits ||.||^2 under the operator the
    methods believe in (shifted when known, nominal otherwise), in units of the noise energy ||y - Rf||^2:
    of the exact data Rf by the truth x (discretisation error: Rf are exact line integrals, A x a discrete
    projection), of y by x, and of y by the naive reconstruction. Means over the validation set."""
    d, seed = config["data"], config["seed"]
    noisy = CTData(shift["geometry"], shift["noise"], d["preset"], d["supersample"])
    exact = CTData(shift["geometry"], 0.0, d["preset"], d["supersample"])
    val, val0 = (draw(data, seed, "validation", 0, args.num_val) for data in (noisy, exact))
    op = RadonTransform(shift["nominal"])
    xs_naive = reconstruct(model, op, val.y, batch_size=8)
    return {k: float(np.mean(np.asarray(v))) for k, v in _misfits(op, val.x, val.y, val0.y, xs_naive).items()}


@functools.cache
def _adam(learning_rate: float, decay_steps: int | None = None):
    """Adam (cosine-decayed to 5% over `decay_steps` if given), one object per setting."""
    if decay_steps is None:
        return optax.adam(learning_rate)
    return optax.adam(optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=0.05))


@functools.cache
def _default_optimizer(learning_rate: float, steps: int, clip):
    return default_optimizer(learning_rate, num_steps=steps, clip=clip)


# --------------------------------------------------------------------------------------------------
# Per-measurement calibration and adaptation (vmapped over fixed-size chunks: compiled once)
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _calibrate_chunk(family, ys, steps, optimizer):
    """`calibrate_operator` on each measurement alone: `phi_i` for every `y_i`."""
    return jax.vmap(lambda y: calibrate_operator(y[None], family, steps=steps, optimizer=optimizer)[0])(ys)


@eqx.filter_jit
def _adapt_chunk(model, family, phis, ys, mu, steps, optimizer):
    """`adapt_to_measurement` on each `y_i` with the operator `family.operator(phi_i)`; its reconstruction."""

    def one(phi, y):
        op = family.operator(phi)
        adapted, _ = adapt_to_measurement(model, y, op, mu=mu, steps=steps, optimizer=optimizer)
        return adapted(y, op)

    return jax.vmap(one)(phis, ys)


@eqx.filter_jit
def _apply_chunk(model, family, phis, ys):
    return jax.vmap(lambda phi, y: model(y, family.operator(phi)))(phis, ys)


def _chunked(fn, arrays: tuple, chunk: int):
    """`fn(*arrays)` in chunks of `chunk` along axis 0 (the last one padded by repetition): one compilation
    for every number of measurements."""
    n = arrays[0].shape[0]
    pad = -n % chunk
    arrays = tuple(jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in arrays)
    outs = [fn(*(a[i : i + chunk] for a in arrays)) for i in range(0, n + pad, chunk)]
    return jnp.concatenate(outs)[:n]


@eqx.filter_jit
def _rr_chunk(model, family, op0, phis, ys, x0s, lam, steps, optimizer):
    """`reuse_and_regularise` on each `y_i` under `family.operator(phi_i)`, from `x0_i`."""
    return jax.vmap(lambda phi, y, x0: reuse_and_regularise(model, y, family.operator(phi), op0, lam=lam,
                                                            steps=steps, optimizer=optimizer, x0=x0)[0])(phis, ys, x0s)


def calibrate_each(shift, ys, args, calib_opt):
    """The per-measurement calibrated parameters `phis` (zeros when the operator is known)."""
    if shift["known"]:
        return jnp.zeros((ys.shape[0],), ys.dtype)
    family = shift["family"]
    return _chunked(lambda y: _calibrate_chunk(family, y, args.calibration_steps, calib_opt), (ys,), args.chunk)


def per_measurement(model, shift, ys, phis, mus_abs, args, opt):
    """Per-measurement adaptation of the measurements `ys` under `family.operator(phis)`:
    `{mu: reconstructions}` (mu = inf: not adapted)."""
    family, chunk = shift["family"], args.chunk
    out = {math.inf: _chunked(lambda p, y: _apply_chunk(model, family, p, y), (phis, ys), chunk)}
    for mu in mus_abs:
        mu_arr = jnp.asarray(mu, ys.dtype)
        out[mu] = _chunked(lambda p, y: _adapt_chunk(model, family, p, y, mu_arr, args.measurement_steps, opt),
                           (phis, ys), chunk)
    return out


def rr_per_measurement(model, shift, op0, ys, phis, naive_xs, lams_abs, args, opt):
    """Reuse-and-regularise reconstructions of `ys`: `{lam: reconstructions}` (lam = inf: not used, the
    naive reconstructions `naive_xs`, which are also the starting points)."""
    family = shift["family"]
    out = {math.inf: naive_xs}
    for lam in lams_abs:
        lam_arr = jnp.asarray(lam, ys.dtype)
        out[lam] = _chunked(lambda p, y, x0: _rr_chunk(model, family, op0, p, y, x0, lam_arr, args.rr_steps, opt),
                            (phis, ys, naive_xs), args.chunk)
    return out


# --------------------------------------------------------------------------------------------------
# TV and the oracle
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _tv_path(op, y, alphas, op_norm, iterations):
    return jax.vmap(lambda a: tv_pdhg(op, y, a, max_iter=iterations, op_norm=op_norm).x)(alphas)


def tv_row(op, val, ys_eval, alphas, iterations):
    """TV with the weight of best mean validation PSNR; its reconstructions of `ys_eval`."""
    dtype = val.y.dtype
    op_norm = jnp.asarray(1.01 * float(operator_norm(op, num_iter=100)), dtype)
    a = jnp.asarray(alphas, dtype)
    paths = jnp.stack([_tv_path(op, y, a, op_norm, iterations) for y in val.y])  # (N, alphas, H, W)
    val_scores = [mean_psnr(paths[:, i], val.x) for i in range(len(alphas))]
    best = int(np.argmax(val_scores))
    one = a[best : best + 1]
    xs = jnp.stack([_tv_path(op, y, one, op_norm, iterations)[0] for y in ys_eval])
    return xs, dict(alpha=float(alphas[best]), alphas=[float(v) for v in alphas],
                    validation_psnr=[float(v) for v in val_scores], iterations=iterations)


def train_oracle(config, base_model, data1: CTData, val, directory: Path, steps: int, init: str, progress: bool,
                 shift_info: dict):
    """The model of `config` trained with ground truth under the shifted data `data1` (resumable)."""
    op1 = data1.operator
    dtype = data1.geometry.angles.dtype
    model = build_model(config, op1, dtype=dtype) if init == "scratch" else base_model
    t = config["train"]
    seed, bs = config["seed"], t["batch_size"]
    every = max(1, min(t["validate_every"], steps))
    run_config = dict(config, train=dict(t, steps=steps), adaptation_oracle=dict(shift_info, init=init))

    def batch_fn(k):
        return draw(data1, seed, "train", k * bs, bs)

    def validate(m):
        return {"psnr_mean": mean_psnr(reconstruct(m, op1, val.y, batch_size=8), val.x)}

    optimizer = _default_optimizer(t["learning_rate"], steps, t["clip"])
    result = fit(model, reconstruction_loss_fn(op1), batch_fn, optimizer, steps,
                 validate_fn=validate, validate_every=every, checkpoint_dir=directory, checkpoint_every=every,
                 config=run_config, progress=progress)
    h = result.history
    return result.model, dict(steps=steps, init=init, batch_size=bs, train_seconds=float(h["time"][-1]) if h["time"]
                              else 0.0, validation_psnr=h.get("val_psnr_mean", []), directory=str(directory))


# --------------------------------------------------------------------------------------------------
# One shift
# --------------------------------------------------------------------------------------------------


def run_shift(shift, model, config, geom0, args, runs: Path, progress: bool) -> tuple[dict, dict]:
    t_start = time.perf_counter()
    name, seed = shift["name"], config["seed"]
    d = config["data"]
    data1 = CTData(shift["geometry"], shift["noise"], d["preset"], d["supersample"])
    op1, op_naive = data1.operator, RadonTransform(shift["nominal"])
    op_naive_0 = RadonTransform(geom0)  # the operator the model was trained for
    val = draw(data1, seed, "validation", 0, args.num_val)
    test = draw(data1, seed, "test", 0, args.num_test)
    sl = shepp_logan_sample(data1)
    ys_eval = jnp.concatenate([sl.y[None], test.y])
    xs_eval = jnp.concatenate([sl.x[None], test.x])
    ys_adapt = draw(data1, seed, "train", ADAPT_OFFSET, args.num_adapt).y  # unlabelled
    family = shift["family"]
    rows, recons, timing = [], {}, {}

    def add(method, xs, **extra):
        rows.append(dict(method=method, **scores(xs, xs_eval), **extra))
        recons[method] = np.asarray(xs[0])

    add("naive", reconstruct(model, op_naive, ys_eval, batch_size=8),
        operator="shifted (known)" if shift["known"] else "nominal (offset unknown)")
    if not shift["known"]:
        add("naive_true", reconstruct(model, op1, ys_eval, batch_size=8), operator="true shifted (oracle knowledge)")

    # --- the proximity weights, in units of the naive misfit per parameter
    P = num_params(model)
    fit0 = float(_data_fit(model, op_naive, ys_adapt))
    mus = {c: c * fit0 / P for c in args.mu_grid}
    opt = _adam(args.adapt_lr)  # one object per setting: compiled loops are reused across shifts
    calib_opt = None if shift["known"] else _adam(shift["lr"], args.calibration_steps)

    # --- adapted on the dataset: calibrate phi once, adapt theta for each mu, select on validation
    t0 = time.perf_counter()
    phi_hat, calib_hist = jnp.zeros((), ys_adapt.dtype), None
    if not shift["known"]:
        phi_hat, calib_hist = calibrate_operator(ys_adapt, family, steps=args.calibration_steps,
                                                 batch_size=min(args.calibration_batch, args.num_adapt),
                                                 optimizer=calib_opt, key=jax.random.key(seed), progress=progress)
    op_hat = family.operator(phi_hat)
    candidates = {math.inf: model}
    for c, mu in mus.items():
        candidates[mu], _, _ = adapt_to_dataset(
            model, ys_adapt, family, phi_hat, mu=mu, steps=args.dataset_steps,
            batch_size=min(args.batch_size, args.num_adapt), optimizer=opt, learn_operator=False,
            key=jax.random.key(seed), progress=progress)
    val_ds = {mu: mean_psnr(reconstruct(m, op_hat, val.y, batch_size=8), val.x) for mu, m in candidates.items()}
    mu_ds = max(val_ds, key=val_ds.get)
    dataset_extra = dict(mu=_finite(mu_ds), mu_relative=_relative(mu_ds, fit0, P),
                         validation_psnr={_key(m, fit0, P): v for m, v in val_ds.items()})
    if not shift["known"]:
        phi = float(phi_hat)
        trace = np.asarray(calib_hist["phi"])[:: max(1, args.calibration_steps // 50)]
        dataset_extra.update(phi=phi, true_phi=shift["true_phi"], unit=shift["unit"],
                             phi_relative_error=abs(phi - shift["true_phi"]) / abs(shift["true_phi"]),
                             calibration_trace=[float(v) for v in trace])
    add("dataset", reconstruct(candidates[mu_ds], op_hat, ys_eval, batch_size=8), **dataset_extra)
    timing["dataset"] = time.perf_counter() - t0

    # --- adapted per measurement: mu selected on the first validation measurements
    t0 = time.perf_counter()
    k = min(args.select_size, args.num_val)
    phis_val, phis = calibrate_each(shift, val.y[:k], args, calib_opt), calibrate_each(shift, ys_eval, args, calib_opt)
    sel = per_measurement(model, shift, val.y[:k], phis_val, list(mus.values()), args, opt)
    val_pm = {mu: mean_psnr(xs, val.x[:k]) for mu, xs in sel.items()}
    mu_pm = max(val_pm, key=val_pm.get)
    chosen = [] if math.isinf(mu_pm) else [mu_pm]
    evals = per_measurement(model, shift, ys_eval, phis, chosen, args, opt)
    pm_extra = dict(mu=_finite(mu_pm), mu_relative=_relative(mu_pm, fit0, P), steps=args.measurement_steps,
                    validation_psnr={_key(m, fit0, P): v for m, v in val_pm.items()}, selection_size=k)
    if not shift["known"]:
        ph = np.asarray(phis, np.float64)
        pm_extra.update(phi_shepp_logan=float(ph[0]), phi_test_mean=float(ph[1:].mean()),
                        phi_test_std=float(ph[1:].std()), true_phi=shift["true_phi"], unit=shift["unit"])
    add("measurement", evals[mu_pm], **pm_extra)
    timing["measurement"] = time.perf_counter() - t0

    # --- reuse and regularise (theta0 kept): lam selected on the same validation measurements
    t0 = time.perf_counter()
    norm2 = float(operator_norm(op_naive, num_iter=100)) ** 2  # of the operator the method believes in
    lams = {c: c * norm2 for c in args.rr_grid}
    rr_opt = _adam(args.rr_lr)
    sel_rr = rr_per_measurement(model, shift, op_naive_0, val.y[:k], phis_val, sel[math.inf], list(lams.values()),
                              args, rr_opt)
    val_rr = {lam: mean_psnr(xs, val.x[:k]) for lam, xs in sel_rr.items()}
    lam_rr = max(val_rr, key=val_rr.get)
    chosen = [] if math.isinf(lam_rr) else [lam_rr]
    evals_rr = rr_per_measurement(model, shift, op_naive_0, ys_eval, phis, evals[math.inf], chosen, args, rr_opt)
    add("rr", evals_rr[lam_rr], lam=_finite(lam_rr), lam_relative=None if math.isinf(lam_rr) else lam_rr / norm2,
        steps=args.rr_steps, op1_norm_squared=norm2, selection_size=k,
        validation_psnr={("not used" if math.isinf(v) else f"{v / norm2:g}"): p for v, p in val_rr.items()})
    timing["rr"] = time.perf_counter() - t0

    # --- retrained oracle
    t0 = time.perf_counter()
    steps = args.oracle_steps or config["train"]["steps"]
    info = dict(shift=name, label=shift["label"], noise=shift["noise"],
                angles=[float(a) for a in np.asarray(shift["geometry"].angles)],
                detector_offset=float(shift["geometry"].detector_offset))
    oracle, oracle_info = train_oracle(config, model, data1, val, runs / f"{name}_{steps}steps_{args.oracle_init}",
                                       steps, args.oracle_init, progress, info)
    add("oracle", reconstruct(oracle, op1, ys_eval, batch_size=8), **oracle_info)
    timing["oracle"] = time.perf_counter() - t0

    # --- TV with the true shifted operator
    t0 = time.perf_counter()
    xs_tv, tv_info = tv_row(op1, val, ys_eval, args.tv_alphas, args.tv_iterations)
    add("tv", xs_tv, operator="true shifted", **tv_info)
    timing["tv"] = time.perf_counter() - t0

    by = {r["method"]: r for r in rows}
    checks = {}
    for col in ("test", "shepp_logan"):
        gap = by["oracle"][col] - by["naive"][col]
        checks[col] = dict(gap=gap, **{
            m: (by[m][col] - by["naive"][col]) / gap if gap > 0 else None for m in RECOVERY})
    # criterion on the test ellipses; undecided (None) when the oracle is not MIN_GAP dB better than naive
    decided = checks["test"]["gap"] >= MIN_GAP
    by_method = [m for m in RECOVERY if decided and checks["test"][m] >= 0.5]
    checks["half_gap_recovered"] = bool(by_method) if decided else None
    checks["half_gap_recovered_by"] = by_method
    if not shift["known"]:
        checks["phi_within_10_percent"] = by["dataset"]["phi_relative_error"] <= 0.10
    result = dict(shift=name, label=shift["label"], known_operator=shift["known"], rows=rows, checks=checks,
                  misfit=misfit(model, shift, config, args),
                  num_params=P, naive_data_fit=fit0, mu_units="fit0 / num_params", timing=timing,
                  seconds=time.perf_counter() - t_start)
    return result, dict(truth=np.asarray(sl.x), **recons)


def _finite(mu):
    return None if math.isinf(mu) else mu


def _relative(mu, fit0, P):
    return None if math.isinf(mu) else mu * P / fit0


def _key(mu, fit0, P):
    return "no adaptation" if math.isinf(mu) else f"{mu * P / fit0:g}"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None,
                    help="trained model (run folder or step_* checkpoint); default the shipped lpd_quick")
    ap.add_argument("--shifts", default=None,
                    help=f"shifts to run, from {SHIFTS} (default all; with --smoke: views,centre)")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--angle-deg", type=float, default=3.0)
    ap.add_argument("--centre-shift", type=float, default=1.5, help="pixels")
    ap.add_argument("--noise", type=float, default=0.10)
    ap.add_argument("--num-test", type=int, default=16)
    ap.add_argument("--num-val", type=int, default=16)
    ap.add_argument("--num-adapt", type=int, default=32, help="unlabelled measurements for dataset adaptation")
    ap.add_argument("--select-size", type=int, default=4, help="validation measurements to choose mu per measurement")
    ap.add_argument("--mu-grid", type=_floats, default=[0.0, 1e2, 1e4], help="in units of fit0 / num_params")
    ap.add_argument("--adapt-lr", type=float, default=3e-4)
    ap.add_argument("--dataset-steps", type=int, default=100)
    ap.add_argument("--measurement-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--calibration-steps", type=int, default=200)
    ap.add_argument("--calibration-batch", type=int, default=8, help="measurements per calibration step")
    ap.add_argument("--angle-lr", type=float, default=5e-3, help="calibration Adam step for the angle (rad)")
    ap.add_argument("--centre-lr", type=float, default=5e-2, help="calibration Adam step for the shift (px)")
    ap.add_argument("--rr-grid", type=_floats, default=[0.03, 0.1, 0.3, 1.0],
                    help="reuse-and-regularise weights lam, in units of ||A1||^2")
    ap.add_argument("--rr-steps", type=int, default=50, help="reuse-and-regularise Adam steps per measurement")
    ap.add_argument("--rr-lr", type=float, default=3e-3, help="reuse-and-regularise Adam step (image units)")
    ap.add_argument("--chunk", type=int, default=4, help="measurements adapted at once (memory)")
    ap.add_argument("--oracle-steps", type=int, default=None, help="default: the model's own training steps")
    ap.add_argument("--oracle-init", choices=("scratch", "trained"), default="scratch",
                    help="oracle from a fresh initialisation (same seed) or fine-tuned from the trained model")
    ap.add_argument("--tv-iterations", type=int, default=500)
    ap.add_argument("--tv-alphas", type=_floats, default=list(np.geomspace(0.05, 20.0, 14)))
    ap.add_argument("--runs", default=str(HERE / "runs" / "adaptation"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--smoke", action="store_true",
                    help="tiny 32 x 32 setting with a tiny LPD trained here for a few steps (plumbing check, ~2 min)")
    ap.add_argument("--misfit-only", action="store_true",
                    help="only the data-misfit diagnostics of each shift (seconds): <out>/adaptation_misfit.json/.md")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.shifts is None:
        args.shifts = "views,centre" if args.smoke else ",".join(SHIFTS)
    args.shifts = [s for s in args.shifts.split(",") if s]
    bad = set(args.shifts) - set(SHIFTS)
    if bad:
        ap.error(f"unknown shifts {sorted(bad)}; expected some of {SHIFTS}")
    for what in ("num_test", "num_val", "num_adapt", "select_size", "batch_size", "dataset_steps",
                 "measurement_steps", "rr_steps", "calibration_steps", "calibration_batch", "chunk", "tv_iterations", "views"):
        if getattr(args, what) < 1:
            ap.error(f"--{what.replace('_', '-')} must be >= 1, got {getattr(args, what)}")
    if args.oracle_steps is not None and args.oracle_steps < 1:
        ap.error(f"--oracle-steps must be >= 1, got {args.oracle_steps}")
    for what in ("mu_grid", "rr_grid"):
        if any(c < 0 for c in getattr(args, what)):
            ap.error(f"--{what.replace('_', '-')} must be >= 0, got {getattr(args, what)}")
    return ap, args


SMOKE = dict(num_test=3, num_val=4, num_adapt=8, select_size=4, chunk=4, mu_grid=[0.0], dataset_steps=8,
             measurement_steps=5, rr_grid=[0.1], rr_steps=5,
             calibration_steps=40, calibration_batch=4, angle_lr=1e-2, centre_lr=0.1, tv_iterations=40,
             tv_alphas=[0.1, 1.0], oracle_steps=10)


def load_model(args, runs: Path, progress: bool):
    """The model, its config and where it came from (smoke: a tiny LPD trained now)."""
    if args.smoke:
        config = experiment_config(
            "lpd", "quick", data=dict(size=32, num_detectors=45),
            model_options=dict(num_iterations=2, hidden=8, num_primal=2, num_dual=2),
            train=dict(steps=SMOKE["oracle_steps"], validation_size=4, validate_every=SMOKE["oracle_steps"]))
        result = train(config, runs / "smoke_model", progress=progress)
        return result.model, config, f"tiny LPD trained for {config['train']['steps']} steps (smoke)"
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not path.exists():
        raise SystemExit(f"no checkpoint at {path}: train one (python benchmarks/comparison.py --preset quick "
                         "--export-lpd jaxrecon/pretrained/lpd_quick) or pass --checkpoint, or use --smoke")
    model, _, config = load_trained(path)
    return model, config, str(path)


def main(argv=None):
    ap, args = parse(argv)
    start = time.perf_counter()
    progress = not args.no_progress
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "smoke_runs" if args.smoke else Path(args.runs)
    model, config, source = load_model(args, runs, progress)
    d = config["data"]
    dtype = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype
    geom = ParallelBeamGeometry.uniform((d["size"], d["size"]), d["num_angles"], d["num_detectors"], dtype=dtype)

    # the model on its own setting, for reference
    data0 = CTData(geom, d["noise"], d["preset"], d["supersample"])
    t0 = draw(data0, config["seed"], "test", 0, args.num_test)
    sl0 = shepp_logan_sample(data0)
    xs0 = reconstruct(model, data0.operator, jnp.concatenate([sl0.y[None], t0.y]), batch_size=8)
    nominal = scores(xs0, jnp.concatenate([sl0.x[None], t0.x]))
    print(f"model ({source}) on its own setting: Shepp-Logan {nominal['shepp_logan']:.2f} dB, "
          f"test {nominal['test']:.2f} dB", flush=True)

    command = " ".join(["python", "benchmarks/adaptation.py", *(sys.argv[1:] if argv is None else argv)])
    if args.misfit_only:
        rows = []
        for name in args.shifts:
            shift = make_shift(name, geom, d["noise"], args)
            rows.append(dict(shift=name, label=shift["label"], known_operator=shift["known"],
                             misfit=misfit(model, shift, config, args)))
        meta = dict(model=source, command=command, num_val=args.num_val, jax=jax.__version__,
                    date=time.strftime("%Y-%m-%d %H:%M:%S"), platform=platform.platform())
        (out / "adaptation_misfit.json").write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
        (out / "adaptation_misfit.md").write_text("\n".join(
            ["# Data misfits of the adaptation benchmark's shifts", "", f"`{command}`, {meta['date']}, jax {meta['jax']}.",
             "", *misfit_table(rows, args.num_val)]) + "\n")
        print((out / "adaptation_misfit.md").read_text(), flush=True)
        return

    results, figures = [], {}
    for name in args.shifts:
        shift = make_shift(name, geom, d["noise"], args)
        res, fig = run_shift(shift, model, config, geom, args, runs, progress)
        results.append(res)
        figures[name] = (shift["label"], fig, {r["method"]: r for r in res["rows"]})
        for r in res["rows"]:
            print(f"  {name:7s} {r['method']:12s} Shepp-Logan {r['shepp_logan']:6.2f} dB  test {r['test']:6.2f} dB",
                  flush=True)
        print(f"  {name:7s} checks: {json.dumps(res['checks'])} ({res['seconds']:.0f} s)", flush=True)
        # written after every shift, so that an interrupted run keeps what it measured
        complete = len(results) == len(args.shifts)
        meta = dict(model=source, config=config, nominal=nominal, smoke=args.smoke,
                    total_seconds=time.perf_counter() - start, complete=complete,
                    devices=[str(dv) for dv in jax.devices()], platform=platform.platform(),
                    cpu_count=os.cpu_count(), jax=jax.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                    options={k: v for k, v in vars(args).items() if k not in ("shifts",)}, shifts=args.shifts,
                    command=command)
        (out / "adaptation.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1, default=_json))
        markdown(meta, results, out / "adaptation.md")
        figure(figures, out / "adaptation.png")
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {out}/adaptation.json/.md/.png", flush=True)


def _json(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def _f(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _setting(r) -> str:
    m = r["method"]
    if m in ("measurement", "dataset"):
        mu = "no adaptation (best on validation)" if r["mu_relative"] is None else f"mu = {r['mu_relative']:g} fit0/P"
        s = mu + (f", {r['steps']} steps" if m == "measurement" else "")
        if m == "dataset" and "phi" in r:
            s += (f"; phi = {r['phi']:.4g} {r['unit']} (true {r['true_phi']:.4g}, "
                  f"error {100 * r['phi_relative_error']:.1f}%)")
        if m == "measurement" and "phi_test_mean" in r:
            s += f"; phi (test) = {r['phi_test_mean']:.4g} +- {r['phi_test_std']:.2g} {r['unit']}"
        return s
    if m == "rr":
        lam = "not used (best on validation)" if r["lam_relative"] is None else f"lam = {r['lam_relative']:g} ||A1||^2"
        return f"{lam}, {r['steps']} steps"
    if m == "oracle":
        return f"{r['steps']} steps x batch {r['batch_size']} ({r['init']}), {r['train_seconds']:.0f} s"
    if m == "tv":
        return f"alpha = {r['alpha']:.3g}, {r['iterations']} iterations"
    return r.get("operator", "")


def markdown(meta, results, path: Path):
    c, nom, o = meta["config"], meta["nominal"], meta["options"]
    d = c["data"]
    lines = [
        "# Model adaptation to shifted CT operators"
        + (" (SMOKE RUN: tiny model, numbers meaningless)" if meta["smoke"] else ""),
        "",
        f"`{meta['command']}` on {meta['platform']} ({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, "
        f"{meta['date']}; whole run {meta['total_seconds'] / 60:.1f} min"
        + ("." if meta.get("complete", True) else
           f" so far (INCOMPLETE: {len(results)} of {len(meta['shifts'])} shifts done)."),
        "",
        f"Model: {c['model']} from `{meta['model']}`, trained on {d['size']} x {d['size']} random ellipses, "
        f"{d['num_angles']} views, {d['num_detectors']} detectors, {100 * d['noise']:g}% noise; on its own setting "
        f"it reaches {nom['shepp_logan']:.2f} dB on Shepp-Logan and {nom['test']:.2f} dB on the test ellipses. "
        f"Test: Shepp-Logan and {o['num_test']} test ellipses under each shifted operator (exact sinograms). "
        f"Adaptation: Adam({o['adapt_lr']:g}), {o['dataset_steps']} steps x batch {o['batch_size']} on "
        f"{o['num_adapt']} unlabelled measurements (dataset), {o['measurement_steps']} steps per measurement; mu "
        f"chosen among {o['mu_grid']} x fit0/P and no adaptation on validation ellipses. Calibration: "
        f"{o['calibration_steps']} Adam steps on the Tikhonov value function (`calibrate_operator`). "
        f"Reuse and regularise: {o['rr_steps']} Adam({o['rr_lr']:g}) steps on the image from the naive "
        f"reconstruction, lam chosen among {o['rr_grid']} x ||A1||^2 and not using it, on the same validation "
        "measurements as the per-measurement mu.",
        "",
    ]
    for res in results:
        lines += [f"## {res['label']}" + ("" if res["known_operator"] else " (unknown to the model)"), "",
                  "| method | Shepp-Logan PSNR (dB) | test ellipses PSNR (dB) | setting |", "|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {LABELS[r['method']]} | {r['shepp_logan']:.2f} | {r['test']:.2f} +- {r['test_std']:.2f} "
                         f"| {_setting(r)} |")
        lines.append("")
    lines += ["## Checks", "",
              "Share of the naive-to-oracle PSNR gap recovered (test ellipses; Shepp-Logan in brackets); "
              f"criterion: at least 0.5 by one of the three methods (not decided, -, when the gap is below {MIN_GAP} dB). "
              "Calibrated parameter (dataset method): criterion within 10% of the truth.",
              "", "| shift | gap (dB) | per measurement | dataset | reuse and regularise | >= 1/2 | parameter "
              "| within 10% |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        ch = res["checks"]
        t, s = ch["test"], ch["shepp_logan"]
        ds = next(r for r in res["rows"] if r["method"] == "dataset")
        par = (f"{ds['phi']:.4g} vs {ds['true_phi']:.4g} {ds['unit']}" if "phi" in ds else "known")
        ok = ch.get("phi_within_10_percent")
        lines.append(
            f"| {res['label']} | {t['gap']:.2f} ({s['gap']:.2f}) | {_f(t['measurement'])} ({_f(s['measurement'])}) "
            f"| {_f(t['dataset'])} ({_f(s['dataset'])}) | {_f(t['rr'])} ({_f(s['rr'])}) "
            f"| {_yes(ch['half_gap_recovered'])} | {par} "
            f"| {_yes(ok)} |")
    if all("misfit" in res for res in results):
        lines += ["", "## Data misfits", "", *misfit_table(results, meta["options"]["num_val"])]
    path.write_text("\n".join(lines) + "\n")


def misfit_table(results, num_val: int) -> list[str]:
    """The markdown table of `misfit` for each shift."""
    lines = [f"Data misfits ||.||^2 on {num_val} validation ellipses, in units of the noise energy "
             "||y - Rf||^2, under the operator the methods are given (shifted when known, nominal otherwise). "
             "Rf: exact line integrals; A x: the discrete projection of the pixel-average truth. A data-fit "
             "loss counts the discretisation error as signal to explain: where the truth's own misfit is several "
             "noise energies, a lower misfit is not a better image (for unknown shifts, the nominal operator's "
             "error adds to it, which calibration removes).", "",
             "| shift | Rf - A x (discretisation) | y - A x (truth) | y - A f(y) (naive) |", "|---|---|---|---|"]
    for res in results:
        m = res["misfit"]
        lines.append(f"| {res['label']} | {m['discretisation']:.2f} | {m['truth']:.2f} | {m['naive']:.2f} |")
    return lines + [""]


def figure(figures, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["truth", "naive", "measurement", "dataset", "rr", "oracle", "tv"]
    fig, axes = plt.subplots(len(figures), len(cols), figsize=(2.2 * len(cols), 2.4 * len(figures)), squeeze=False)
    for i, (label, recs, by) in enumerate(figures.values()):
        for j, m in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(recs[m], cmap="gray", vmin=0, vmax=1)
            title = "Shepp-Logan" if m == "truth" else f"{LABELS[m]}\n{by[m]['shepp_logan']:.2f} dB"
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
