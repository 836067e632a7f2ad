"""The rows of `adaptation.py` on one shifted setting: each method's reconstructions and settings.

`shift_rows` computes every row of the table for one shift: naive, adapted on the dataset, adapted per
measurement, reuse and regularise, the retrained oracle and TV, each with its parameter chosen on
validation data as `adaptation.py`'s docstring states; `misfit` is the data-misfit diagnostic. The
per-measurement methods run vmapped over fixed-size chunks of measurements, so each compiles once.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness import choose_tv_weight, mean_psnr, tv_path
from jaxrecon.adapt.adaptation import adapt_to_dataset, adapt_to_measurement, calibrate_operator, reuse_and_regularise
from jaxrecon.metrics import psnr, ssim
from jaxrecon.operators import RadonTransform, operator_norm
from jaxrecon.train import CTData, batch_keys, default_optimizer, fit, reconstruct, reconstruction_loss_fn
from jaxrecon.train import shepp_logan_sample
from jaxrecon.train.experiment import build_model

ADAPT_OFFSET = 1_000_000  # unlabelled adaptation measurements: train-split indices far beyond any training run


# --------------------------------------------------------------------------------------------------
# Data and metrics
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _draw(data: CTData, keys):
    return jax.vmap(data.sample)(keys)


def draw(data: CTData, seed: int, split: str, start: int, count: int):
    """Samples `start .. start + count` of `data`'s `split` (the training runs' keys)."""
    return _draw(data, batch_keys(seed, split, start, count))


@jax.jit
def _scores(xs, refs):  # data range: that of each reference
    return jax.vmap(psnr)(xs, refs), jax.vmap(ssim)(xs, refs)


def scores(xs, refs) -> dict:
    """PSNR/SSIM of an evaluation stack: entry 0 is Shepp-Logan, the rest the test ellipses."""
    p, s = (np.asarray(v, np.float64) for v in _scores(jnp.asarray(xs, refs.dtype), refs))
    return dict(shepp_logan=float(p[0]), shepp_logan_ssim=float(s[0]), test=float(p[1:].mean()),
                test_std=float(p[1:].std()), test_ssim=float(s[1:].mean()))


def num_params(model) -> int:
    """Number of trainable (inexact) array entries of `model`."""
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


def tv_row(op, val, ys_eval, alphas, iterations):
    """TV with the weight of best mean validation PSNR; its reconstructions of `ys_eval`."""
    best, a, op_norm, val_scores = choose_tv_weight(op, val, alphas, iterations)
    one = a[best : best + 1]
    xs = jnp.stack([tv_path(op, y, one, op_norm, iterations)[0] for y in ys_eval])
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
# Every row of one shift
# --------------------------------------------------------------------------------------------------


def shift_rows(shift, model, config, geom0, args, runs: Path, progress: bool) -> tuple[list, dict, dict]:
    """Every row of the shift `shift` (see the module docstring): `(rows, images, info)`, images = the
    Shepp-Logan truth and each row's reconstruction of it, info = the mu units and each method's seconds."""
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

    units = dict(num_params=P, naive_data_fit=fit0, mu_units="fit0 / num_params", timing=timing)
    return rows, dict(truth=np.asarray(sl.x), **recons), units


def _finite(mu):
    return None if math.isinf(mu) else mu


def _relative(mu, fit0, P):
    return None if math.isinf(mu) else mu * P / fit0


def _key(mu, fit0, P):
    return "no adaptation" if math.isinf(mu) else f"{mu * P / fit0:g}"
