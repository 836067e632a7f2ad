"""The comparison table of learned and classical CT reconstruction (Adler & Öktem's setting).

Train on random ellipses ("adler2018" preset: Adler & Öktem's distribution), test on Shepp-Logan
(and on held-out ellipses from the test split), 30 views, 5% relative Gaussian noise, exact
analytic sinograms (no inverse crime), truth = 4x4 supersampled pixel averages.

Methods: FBP, TV (PDHG), FBP + U-Net (residual, FBPConvNet), unrolled PGD, LISTA, learned gradient
descent, learned primal-dual, and the deep equilibrium DE-Grad and DE-Prox (Gilton et al.; their
forward iterations to the fixed point are reported). Parameter rules, decided before looking at Shepp-Logan: the FBP
filter and the TV weight maximise the mean PSNR on the validation ellipses (the same 16 samples
the learned methods validate on); the learned methods train for the preset's fixed number of
steps. An "oracle" TV row (weight tuned on Shepp-Logan itself) is reported for reference only.

    python benchmarks/comparison.py --preset quick      # 64 x 64, 2 CPU cores, < 45 minutes
    python benchmarks/comparison.py --preset quick15    # the same with 15 views (the paper's ratio)
    python benchmarks/comparison.py --preset standard   # 128 x 128, the paper's data, < 2 h per model on 2 cores
    python benchmarks/comparison.py --preset paper      # 128 x 128, the paper's setting, for a GPU

Training runs are checkpointed under --runs (default benchmarks/runs/<preset>/<model>) and resumed
if interrupted; --fresh deletes them first; --minutes M trains each model at most M more minutes, then
evaluates it as it stands (its row says how many of its steps it had); --keep copies the rows of the
learned models not in --models from the committed table of the same preset and data (retrain one model
without the others' runs; the table names the run they come from). Writes
benchmarks/results/comparison_<preset>.json, .md and .png. With --export-lpd DIR the trained learned
primal-dual is also copied to DIR (that is how the demo's shipped model is produced).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import HERE, RESULTS, environment, fmt, markdown_table, pyplot, save_figure, write_results
from jaxrecon.metrics import psnr, ssim
from jaxrecon.operators import fbp
from jaxrecon.operators.fbp import FBP_FILTERS
from jaxrecon.solvers import tv_pdhg
from jaxrecon.train import batch_keys, evaluate, shepp_logan_sample
from jaxrecon.train.experiment import MODELS, build_data, experiment_config, load_trained, timed, train

LABELS = {
    "fbp": "FBP",
    "tv": "TV (PDHG)",
    "tv_oracle": "TV, weight tuned on Shepp-Logan (oracle, reference only)",
    "unet": "FBP + U-Net",
    "pgd": "Unrolled PGD",
    "lista": "LISTA",
    "lgd": "Learned gradient descent",
    "lpd": "Learned primal-dual",
    "degrad": "DE-Grad (deep equilibrium)",
    "deprox": "DE-Prox (deep equilibrium)",
}
DEQ_MODELS = ("degrad", "deprox")
TV_ITERATIONS = {"quick": 500, "quick15": 500, "standard": 1000, "paper": 1000}


def parse_steps(text: str) -> dict:
    """`"300"` -> `{"*": 300}`; `"lpd=12000,lgd=6000"` -> `{"lpd": 12000, "lgd": 6000}`."""
    try:
        if "=" not in text:
            return {"*": int(text)}
        pairs = dict(item.split("=") for item in text.split(","))
        out = {k.strip(): int(v) for k, v in pairs.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or model=N,... (e.g. lpd=12000), got {text!r}") from None
    if set(out) - set(MODELS) or min(out.values()) < 1:
        raise argparse.ArgumentTypeError(f"expected models from {MODELS} with positive steps, got {text!r}")
    return out


def num_params(model) -> int:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(a.size for a in leaves)) - (1 if hasattr(model, "op_norm") else 0)  # op norm is frozen


def metrics_row(x, ref):
    return float(psnr(x, ref, data_range=float(ref.max() - ref.min()))), float(
        ssim(x, ref, data_range=float(ref.max() - ref.min()))
    )


def mean_metrics(xs, refs):
    p = [metrics_row(x, r) for x, r in zip(xs, refs)]
    return float(np.mean([a for a, _ in p])), float(np.mean([b for _, b in p]))


def classical(op, val, test, sl, preset):
    """FBP (filter chosen on validation) and TV (weight chosen on validation; oracle row too)."""
    rows, recons = [], {}
    geom = op.geom
    fbp_batch = jax.jit(lambda ys, f: jax.vmap(lambda y: fbp(y, geom, f))(ys), static_argnums=1)
    scores = {f: mean_metrics(fbp_batch(val.y, f), val.x)[0] for f in FBP_FILTERS}
    best = max(scores, key=scores.get)
    t, _ = timed(jax.jit(lambda y: fbp(y, geom, best)), sl.y)
    x = fbp(sl.y, geom, best)
    recons["fbp"] = x
    rows.append(dict(method="fbp", parameter=f"filter={best}", seconds=t, parameters=0, train_seconds=0.0,
                     shepp_logan=metrics_row(x, sl.x), test=mean_metrics(fbp_batch(test.y, best), test.x)))

    iters = TV_ITERATIONS[preset]
    alphas = np.geomspace(0.05, 20.0, 14)

    @jax.jit
    def tv_path(y):  # one y, all alphas (vmapped regularisation path)
        return jax.vmap(lambda a: tv_pdhg(op, y, a, max_iter=iters).x)(jnp.asarray(alphas, y.dtype))

    val_paths = jax.lax.map(tv_path, val.y)  # (N, alphas, H, W)
    val_scores = [mean_metrics(val_paths[:, i], val.x)[0] for i in range(len(alphas))]
    i_best = int(np.argmax(val_scores))
    alpha = float(alphas[i_best])
    tv_one = jax.jit(lambda y: tv_pdhg(op, y, alpha, max_iter=iters).x)
    t, _ = timed(tv_one, sl.y)
    recons["tv"] = tv_one(sl.y)
    test_x = jax.lax.map(tv_one, test.y)
    rows.append(dict(method="tv", parameter=f"alpha={alpha:.3g}, {iters} iterations", seconds=t, parameters=0,
                     train_seconds=0.0, shepp_logan=metrics_row(recons["tv"], sl.x),
                     test=mean_metrics(test_x, test.x), validation_psnr=[float(v) for v in val_scores],
                     alphas=[float(a) for a in alphas]))
    sl_path = tv_path(sl.y)
    sl_scores = [metrics_row(sl_path[i], sl.x)[0] for i in range(len(alphas))]
    j = int(np.argmax(sl_scores))
    rows.append(dict(method="tv_oracle", parameter=f"alpha={alphas[j]:.3g}", seconds=t, parameters=0,
                     train_seconds=0.0, shepp_logan=metrics_row(sl_path[j], sl.x), test=None))
    return rows, recons


def forward_iterations(model, op, sl, test):
    """A DEQ's forward solver diagnostics on Shepp-Logan and the test ellipses."""
    solve = eqx.filter_jit(lambda m, ys: jax.vmap(lambda y: m.solve(y, op))(ys))
    s_sl, s_test = solve(model, sl.y[None]), solve(model, test.y)
    return dict(iterations_shepp_logan=int(s_sl.iterations[0]),
                iterations_test_mean=float(jnp.mean(s_test.iterations)),
                iterations_test_max=int(jnp.max(s_test.iterations)),
                converged_fraction=float(jnp.mean(jnp.concatenate([s_sl.converged, s_test.converged]))),
                tolerance=float(model.tol), max_iter=int(model.max_iter))


def profile_step(model_name, model, op, batch, config):
    """Median time of one training step (forward + gradient + Adam) vs the same operator calls alone.

    The operator share is measured by a function that applies exactly the operator calls of the
    model's forward pass (K forward + K adjoint projections per sample for the unrolled schemes; one
    FBP for the U-Net) and differentiates through them, on the same batch, jitted.
    """
    from jaxrecon.train.loop import default_optimizer, reconstruction_loss_fn

    opt = default_optimizer(1e-3, num_steps=10)
    loss_fn = reconstruction_loss_fn(op)
    params = eqx.filter(model, eqx.is_inexact_array)

    @eqx.filter_jit
    def step(model, state, batch):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, loss

    t_step, t_first = timed(step, model, opt.init(params), batch, repeats=5)
    out = dict(step_seconds=t_step, first_step_seconds=t_first, operator_seconds=None, operator_share=None,
               batch_size=int(batch.y.shape[0]))
    if model_name in DEQ_MODELS:  # data-dependent iteration counts: no fixed operator-only twin
        return out
    k = 0 if model_name == "unet" else config["model_options"]["num_iterations"]
    geom = op.geom

    @jax.jit
    def operators_only(ys):
        def one(y):
            x = fbp(y, geom, "hann")
            for _ in range(k):
                x = x - 1e-4 * op.T(op(x) - y)
            return jnp.sum(x**2)

        return jax.grad(lambda ys: jnp.sum(jax.vmap(one)(ys)))(ys)

    t_ops, _ = timed(operators_only, batch.y, repeats=5)
    return dict(out, operator_seconds=t_ops, operator_share=t_ops / t_step)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=tuple(TV_ITERATIONS), default="quick")
    ap.add_argument("--models", default=",".join(MODELS), help=f"learned models to train, from {MODELS}")
    ap.add_argument("--runs", default=None, help="checkpoint folder (default benchmarks/runs/<preset>)")
    ap.add_argument("--fresh", action="store_true", help="delete earlier checkpoints of these runs first")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--export-lpd", default=None, help="copy the trained LPD checkpoint to this folder")
    ap.add_argument("--steps", type=parse_steps, default={},
                    help="training steps instead of the preset's: N for every model (smoke runs) or "
                         "model=N,... for some (longer runs, e.g. lpd=12000,lgd=6000)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="train each model at most this many more minutes, then evaluate it as it stands")
    ap.add_argument("--keep", action="store_true",
                    help="keep the rows of the learned models not in --models from the existing "
                         "comparison_<preset>.json (same data), marked with the run they come from")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.minutes is not None and not args.minutes > 0:
        ap.error(f"--minutes must be a positive number, got {args.minutes}")
    start = time.perf_counter()
    preset = args.preset
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; expected some of {MODELS}")
    runs = Path(args.runs) if args.runs else HERE / "runs" / preset

    base = experiment_config("lpd", preset)
    stem = Path(args.out) / f"comparison_{preset}"
    kept, kept_from = [], None
    if args.keep:
        try:
            kept, kept_from = kept_rows(stem.with_suffix(".json"), base["data"], models)
        except ValueError as e:
            ap.error(str(e))
    data = build_data(base)
    op = data.operator
    vs = base["train"]["validation_size"]
    sample = jax.jit(jax.vmap(data.sample))
    val = sample(batch_keys(base["seed"], "validation", 0, vs))
    test = sample(batch_keys(base["seed"], "test", 0, 16))
    sl = shepp_logan_sample(data)

    t0 = time.perf_counter()
    rows, recons = classical(op, val, test, sl, preset)
    print(f"classical methods: {time.perf_counter() - t0:.1f} s", flush=True)
    for r in rows:
        print(f"  {r['method']:10s} Shepp-Logan PSNR {r['shepp_logan'][0]:.2f} dB ({r['parameter']})", flush=True)

    profiles = {}
    for name in models:
        config = experiment_config(name, preset)
        steps = args.steps.get(name, args.steps.get("*"))
        if steps is not None:
            config["train"].update(steps=steps, validate_every=min(config["train"]["validate_every"], steps))
        directory = runs / name
        if args.fresh and directory.exists():
            shutil.rmtree(directory)
        t0 = time.perf_counter()
        limit = None if args.minutes is None else 60 * args.minutes
        result = train(config, directory, progress=not args.no_progress, time_limit=limit)
        wall = time.perf_counter() - t0
        model = result.model
        h = result.history
        train_seconds = float(h["time"][-1]) if h.get("time") else wall
        ev_sl = evaluate(model, op, jax.tree.map(lambda a: a[None], sl))
        ev_test = evaluate(model, op, test, timed=False)
        recons[name] = jax.jit(lambda y, m=model: m(y, op))(sl.y)
        batch = sample(batch_keys(config["seed"], "train", 0, config["train"]["batch_size"]))
        profiles[name] = profile_step(name, model, op, batch, config)
        planned = config["train"]["steps"]
        done = int(h["step"][-1]) + 1 if h.get("step") else 0  # fewer than planned: stopped by --minutes
        steps_done = f"{planned} steps" if done >= planned else f"{done} of {planned} steps"
        setting = f"{steps_done} x batch {config['train']['batch_size']}" + ("" if done >= planned else " (unfinished)")
        extra = {}
        if name in DEQ_MODELS:
            extra = forward_iterations(model, op, sl, test)
            setting += (f"; forward iterations {extra['iterations_shepp_logan']} (Shepp-Logan), "
                        f"{extra['iterations_test_mean']:.1f} (test mean), converged {extra['converged_fraction']:.0%}")
        rows.append(dict(
            method=name, parameter=setting, **extra,
            seconds=ev_sl["seconds_per_reconstruction"], parameters=num_params(model),
            train_seconds=train_seconds, compile_seconds=float(sum(h.get("compile_seconds", [0.0]))),
            shepp_logan=(ev_sl["psnr_mean"], ev_sl["ssim_mean"]), test=(ev_test["psnr_mean"], ev_test["ssim_mean"]),
            validation_psnr=[float(v) for v in h.get("val_psnr_mean", [])], validation_step=h.get("val_step", []),
            loss=[float(v) for v in h.get("loss", [])[:: max(1, len(h.get("loss", [])) // 200)]],
            config=config, profile=profiles[name],
        ))
        print(f"  {name:10s} Shepp-Logan PSNR {ev_sl['psnr_mean']:.2f} dB, trained {train_seconds:.0f} s "
              f"(run wall {wall:.0f} s)", flush=True)
        if name == "lpd" and args.export_lpd:
            export(directory, Path(args.export_lpd))

    total = time.perf_counter() - start
    order = list(LABELS)
    rows = sorted(rows + kept, key=lambda r: order.index(r["method"]))
    meta = dict(preset=preset, data=base["data"], **environment(), total_seconds=total,
                tv_iterations=TV_ITERATIONS[preset], steps_override=args.steps or None, models=list(models),
                minutes=args.minutes, kept_from=kept_from)
    write_results(stem.name, dict(meta=meta, rows=rows), markdown(meta, rows), stem.parent)
    figure(sl.x, recons, rows, stem.with_suffix(".png"))
    print(f"total {total / 60:.1f} min; wrote {stem}.json/.md/.png", flush=True)


def kept_rows(path: Path, data: dict, models) -> tuple[list, list | None]:
    """The learned rows of an earlier table (`path`) for the models not in `models`, and where they come from."""
    if not path.is_file():
        raise ValueError(f"--keep needs an earlier table to keep rows from, but {path} does not exist")
    old = json.loads(path.read_text())
    if old["meta"]["data"] != data:
        raise ValueError(f"--keep: {path} was made on other data ({old['meta']['data']}), not {data}")
    here = dict(date=old["meta"]["date"], command="python benchmarks/comparison.py " + command_args(old["meta"]))
    rows = [dict(r, from_run=r.get("from_run", here)) for r in old["rows"]
            if r["method"] in MODELS and r["method"] not in models]
    runs = []  # each earlier run once, with its models (a row kept twice keeps its first run)
    for r in rows:
        entry = next((e for e in runs if e["date"] == r["from_run"]["date"]), None)
        if entry is None:
            runs.append(entry := dict(r["from_run"], models=[]))
        entry["models"].append(r["method"])
    return rows, runs or None


def export(directory: Path, target: Path):
    """Copy the latest checkpoint of a run (model and config only) to `target`."""
    from jaxrecon.train import latest_checkpoint

    src = latest_checkpoint(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.eqx", "config.json"):
        shutil.copy2(src / name, target / name)
    load_trained(target)  # check it loads


def _models_arg(meta):
    models = meta.get("models")
    return "" if models is None or set(models) == set(MODELS) else " --models " + ",".join(models)


def _steps_arg(meta):
    steps = meta.get("steps_override") or {}
    if not steps:
        return ""
    return f" --steps {steps['*']}" if "*" in steps else " --steps " + ",".join(f"{k}={v}" for k, v in steps.items())


def _minutes_arg(meta):
    return "" if meta.get("minutes") is None else f" --minutes {meta['minutes']:g}"


def command_args(meta) -> str:
    keep = " --keep" if meta.get("kept_from") else ""
    return f"--preset {meta['preset']}{_models_arg(meta)}{_steps_arg(meta)}{_minutes_arg(meta)}{keep}"


def markdown(meta, rows) -> str:
    d = meta["data"]
    kept = meta.get("kept_from")
    lines = [
        f"# Learned vs classical reconstruction: preset `{meta['preset']}`",
        "",
        f"`python benchmarks/comparison.py {command_args(meta)}` on {meta['device_kind']} "
        f"({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, {meta['date']}; whole run "
        f"{meta['total_seconds'] / 60:.1f} min.",
        "",
    ]
    for run in kept or ():
        names = ", ".join(LABELS[m] for m in run["models"])
        lines += [f"Rows kept (`--keep`) from the earlier run of {run['date']} (`{run['command']}`), training-step "
                  f"profile included: {names}.", ""]
    lines += [
        f"Setting: {d['size']} x {d['size']} images, {d['num_angles']} views in [0, pi), {d['num_detectors']} "
        f"detectors, {100 * d['noise']:g}% relative Gaussian noise on the exact analytic sinogram; trained on "
        f"random ellipses (`{d['preset']}`), tested on the modified Shepp-Logan phantom (truth: 4x4 "
        "supersampled pixel averages) and on 16 held-out test ellipses. FBP filter and TV weight: best mean "
        "PSNR on the 16 validation ellipses the learned methods validate on. Training times come from each run's "
        "checkpoint history: a run resumed from an earlier invocation keeps the time (and machine load) it was "
        "trained under.",
        "",
    ]
    table = []
    for r in rows:
        test = r["test"] or (None, None)
        table.append([LABELS[r["method"]], fmt(r["shepp_logan"][0], missing=""), fmt(r["shepp_logan"][1], "{:.3f}", ""),
                      fmt(test[0], missing=""), fmt(test[1], "{:.3f}", ""), f"{r['seconds']:.4f}", r["parameters"],
                      f"{r['train_seconds']:.0f}", r["parameter"]])
    lines += markdown_table(["method", "Shepp-Logan PSNR (dB)", "SSIM", "test ellipses PSNR", "SSIM", "recon. time (s)",
                             "parameters", "training time (s)", "setting"], table)
    prof = [r for r in rows if "profile" in r]
    if prof:
        lines += [
            "",
            "Training step profile (median of 5 after warm-up; operator share = the same projector calls, "
            "forward and backward, timed alone, divided by the whole step):",
            "",
        ]
        table = []
        for r in prof:
            p = r["profile"]
            share = "" if p["operator_share"] is None else f"{100 * p['operator_share']:.0f}%"
            table.append([LABELS[r["method"]], p["batch_size"], f"{p['step_seconds']:.3f}",
                          fmt(p["operator_seconds"], "{:.3f}", ""), share, f"{r['compile_seconds']:.1f}"])
        lines += markdown_table(["method", "batch", "step (s)", "operators alone (s)", "operator share", "compile (s)"],
                                table)
    return "\n".join(lines) + "\n"


def figure(truth, recons, rows, path):
    order = ["truth"] + [m for m in ("fbp", "tv", "unet", "pgd", "lista", "lgd", "lpd", *DEQ_MODELS) if m in recons]
    by = {r["method"]: r for r in rows}
    fig, axes = pyplot().subplots(1, len(order), figsize=(2.4 * len(order), 2.8))
    for ax, m in zip(axes, order):
        img = truth if m == "truth" else recons[m]
        ax.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=1)
        title = "Shepp-Logan" if m == "truth" else f"{LABELS[m]}\n{by[m]['shepp_logan'][0]:.2f} dB"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
