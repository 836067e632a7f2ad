"""Plug-and-play priors, ADMM and self-supervised training beside TV, on the comparison's data.

The data, the parameter rules and the test sets are those of `comparison.py` (quick preset: 64 x 64,
30 views, 5% noise, exact analytic sinograms; tested on Shepp-Logan and 16 held-out ellipses; every
parameter chosen by the mean PSNR on the 16 validation ellipses, never on the test data). Rows:

- FBP and TV (PDHG), exactly as in the comparison table (its `classical`);
- ADMM-TV: `admm` on the same objective with TV's chosen weight (it must reach the PDHG solution;
  the relative difference on Shepp-Logan is reported);
- PnP-ADMM and RED with the noise-level-conditioned DnCNN of `jaxrecon.train.train_denoiser`
  (trained on the preset's random-ellipse images, never on a sinogram): the denoiser's noise level
  and the ADMM penalty / RED weight chosen on a grid on validation ellipses;
- any trained reconstruction run given with `--model LABEL=DIR`, e.g. a self-supervised learned
  primal-dual (`jaxrecon train --model lpd --loss sure ...`) beside its supervised counterpart
  trained for the same steps; its training loss and steps are read from its checkpoint.

    jaxrecon train --model lpd --preset quick --steps 800 --output runs/lpd_sup_800
    jaxrecon train --model lpd --preset quick --loss sure --steps 800 --output runs/lpd_sure_800
    python benchmarks/priors.py --denoiser benchmarks/checkpoints/dncnn_quick \\
        --model "LPD, supervised, 800 steps=runs/lpd_sup_800" --model "LPD, SURE (no truths), 800 steps=runs/lpd_sure_800"
    python benchmarks/priors.py --append --model "LPD, EI (no truths), 800 steps=runs/lpd_ei_800"
    python benchmarks/priors.py --smoke --out /tmp/priors   # tiny grids and iterations: a check that it runs

`--append` evaluates only the `--model` runs and merges their rows into the existing
<out>/priors_<preset>.json (a row with the same label is replaced; the other rows, the denoiser and the
run's metadata are kept, and the appended labels are listed in the metadata with the date).

The committed denoiser (`benchmarks/checkpoints/dncnn_quick`) is `jaxrecon train --model dncnn --preset
quick`. Without `--denoiser` the denoiser is trained (or resumed) in benchmarks/runs/<preset>/dncnn (with
`--smoke`: 3 steps in <out>/dncnn_smoke).
Writes <out>/priors_<preset>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from comparison import classical, mean_metrics, metrics_row
from harness import HERE, RESULTS, environment, fmt, markdown_table, write_results
from jaxrecon.operators import operator_norm
from jaxrecon.solvers import admm, pnp_admm, red
from jaxrecon.train import (batch_keys, denoiser_config, evaluate, load_denoiser, pnp_denoiser, shepp_logan_sample,
                            train_denoiser)
from jaxrecon.train.experiment import build_data, experiment_config, load_trained

GRID = dict(  # (the denoiser's noise level sigma in image units, the weight in units of ||A||^2)
    # A first grid, sigma in (0.01, 0.02, 0.03, 0.05) x rho in (0.01, 0.03, 0.1), chose its corner
    # (0.05, 0.01): this one extends it past that corner.
    pnp_admm=[(s, r) for s in (0.03, 0.05, 0.08, 0.12) for r in (0.001, 0.003, 0.01)],  # r: ADMM penalty rho
    red=[(s, a) for s in (0.01, 0.03, 0.08) for a in (0.03, 0.1, 0.3)],  # a: RED weight alpha
)
GRID_VALIDATION = 8  # the grids are scored on the first 8 validation ellipses (cost: one DnCNN per iteration)
ITERATIONS = dict(admm=200, pnp_admm=50, red=100)


def _grid(solve, val, test, sl, grid):
    """Score each `(a, b)` of `grid` on validation; return the best pair, its scores and its reconstructions."""
    ys, xs = val.y[:GRID_VALIDATION], val.x[:GRID_VALIDATION]
    scores = {pair: mean_metrics(solve(ys, *pair), xs)[0] for pair in grid}
    best = max(scores, key=scores.get)
    jax.block_until_ready(solve(sl.y[None], *best))  # compile for one image; timed below after it
    t0 = time.perf_counter()
    x_sl = jax.block_until_ready(solve(sl.y[None], *best)[0])
    seconds = time.perf_counter() - t0
    return best, scores, x_sl, solve(test.y, *best), seconds


def plug_and_play_rows(op, net, val, test, sl, iters, smoke=False):
    norm2 = float(operator_norm(op)) ** 2

    @eqx.filter_jit
    def pnp(net, ys, sigma, rho):
        den = pnp_denoiser(net, sigma)
        return jax.vmap(lambda y: pnp_admm(op, y, den, rho=rho * norm2, max_iter=iters["pnp_admm"]).x)(ys)

    @eqx.filter_jit
    def red_(net, ys, sigma, alpha):
        den = pnp_denoiser(net, sigma)
        return jax.vmap(lambda y: red(op, y, den, alpha * norm2, max_iter=iters["red"]).x)(ys)

    rows = []
    for method, solve, wname in (("pnp_admm", pnp, "rho"), ("red", red_, "alpha")):
        grid = GRID[method][:2] if smoke else GRID[method]
        (s, w), scores, x_sl, x_test, seconds = _grid(lambda ys, a, b, f=solve: f(net, ys, a, b), val, test, sl, grid)
        rows.append(dict(method=method, parameter=f"sigma={s:g}, {wname}={w:g} ‖A‖^2, {iters[method]} iterations",
                         seconds=seconds, shepp_logan=metrics_row(x_sl, sl.x), test=mean_metrics(x_test, test.x),
                         validation_psnr={f"{a:g},{b:g}": v for (a, b), v in scores.items()}))
        print(f"  {method:10s} Shepp-Logan {rows[-1]['shepp_logan'][0]:.2f} dB, test {rows[-1]['test'][0]:.2f} dB "
              f"({rows[-1]['parameter']})", flush=True)
    return rows


def admm_row(op, alpha, tv_sl, test, sl, iters):
    solve = jax.jit(jax.vmap(lambda y: admm(op, y, alpha, penalty="tv", max_iter=iters["admm"]).x))
    jax.block_until_ready(solve(sl.y[None]))  # compile; timed below after it
    t0 = time.perf_counter()
    x_sl = jax.block_until_ready(solve(sl.y[None])[0])
    seconds = time.perf_counter() - t0
    rel = float(jnp.linalg.norm(x_sl - tv_sl) / jnp.linalg.norm(tv_sl))
    return dict(method="admm_tv", parameter=f"alpha={alpha:.3g} (TV's), {iters['admm']} iterations",
                seconds=seconds, shepp_logan=metrics_row(x_sl, sl.x), test=mean_metrics(solve(test.y), test.x),
                relative_difference_to_pdhg=rel)


def model_row(label, directory, op, test, sl):
    model, _, config = load_trained(directory)
    ev_sl = evaluate(model, op, jax.tree.map(lambda a: a[None], sl))
    ev_test = evaluate(model, op, test, timed=False)
    train = config["train"]
    options = "".join(f", {k}={v}" for k, v in sorted((train.get("loss_options") or {}).items()))
    return dict(method=label, parameter=f"{config['model']}, loss {train.get('loss', 'supervised')}{options}, "
                f"{train['steps']} steps x batch {train['batch_size']}", seconds=ev_sl["seconds_per_reconstruction"],
                shepp_logan=(ev_sl["psnr_mean"], ev_sl["ssim_mean"]), test=(ev_test["psnr_mean"], ev_test["ssim_mean"]),
                directory=str(directory))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick", help="data preset (as comparison.py)")
    ap.add_argument("--denoiser", default=None, help="a train_denoiser run (default: train one in benchmarks/runs)")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=DIR",
                    help="a trained reconstruction run to evaluate beside the rows (repeatable)")
    ap.add_argument("--smoke", action="store_true", help="tiny sets, grids and iterations (a check that it runs)")
    ap.add_argument("--append", action="store_true",
                    help="evaluate only the --model runs and merge their rows into the existing results")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.append and not args.model:
        ap.error("--append needs at least one --model LABEL=DIR")
    models = []
    for item in args.model:
        label, sep, directory = item.partition("=")
        if not sep or not label or not directory:
            ap.error(f"--model expects LABEL=DIR, got {item!r}")
        models.append((label, Path(directory)))
    start = time.perf_counter()

    base = experiment_config("lpd", args.preset)
    data = build_data(base)
    op = data.operator
    n_val, n_test = (4, 4) if args.smoke else (base["train"]["validation_size"], 16)
    sample = jax.jit(jax.vmap(data.sample))
    val = sample(batch_keys(base["seed"], "validation", 0, n_val))
    test = sample(batch_keys(base["seed"], "test", 0, n_test))
    sl = shepp_logan_sample(data)
    iters = {k: 4 for k in ITERATIONS} if args.smoke else ITERATIONS
    if args.append:
        return append_models(args, models, op, test, sl)

    rows, recons = classical(op, val, test, sl, args.preset)
    rows = [r for r in rows if r["method"] != "tv_oracle"]
    alpha = float(rows[1]["parameter"].split(",")[0].removeprefix("alpha="))
    rows.append(admm_row(op, alpha, recons["tv"], test, sl, iters))
    print(f"  admm_tv    relative difference to PDHG-TV on Shepp-Logan {rows[-1]['relative_difference_to_pdhg']:.2e}",
          flush=True)

    default = Path(args.out) / "dncnn_smoke" if args.smoke else HERE / "runs" / args.preset / "dncnn"
    directory = Path(args.denoiser) if args.denoiser else default
    if args.denoiser is None:
        config = denoiser_config(args.preset, train={"steps": 3, "validate_every": 3} if args.smoke else {})
        train_denoiser(config, directory, progress=not args.smoke)
    net, dconfig = load_denoiser(directory)
    rows += plug_and_play_rows(op, net, val, test, sl, iters, args.smoke)
    for label, path in models:
        rows.append(model_row(label, path, op, test, sl))

    meta = dict(preset=args.preset, data=base["data"], smoke=args.smoke, warm_timing=True, denoiser=str(directory),
                denoiser_train=dconfig["train"], **environment(), total_seconds=time.perf_counter() - start)
    stem = f"priors_{args.preset}"
    write_results(stem, dict(meta=meta, rows=rows), markdown(meta, rows), args.out)
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {Path(args.out) / stem}.json/.md", flush=True)


def append_models(args, models, op, test, sl):
    stem = f"priors_{args.preset}"
    path = Path(args.out) / f"{stem}.json"
    if not path.exists():
        raise SystemExit(f"--append: no results to append to at {path}; run without --append first")
    results = json.loads(path.read_text())
    meta, rows = results["meta"], results["rows"]
    for label, directory in models:
        row = model_row(label, directory, op, test, sl)
        rows = [r for r in rows if r["method"] != label] + [row]
        print(f"  {label}: Shepp-Logan {row['shepp_logan'][0]:.2f} dB, test {row['test'][0]:.2f} dB", flush=True)
    meta.setdefault("appended", []).append(dict(models=[label for label, _ in models], **environment()))
    write_results(stem, dict(meta=meta, rows=rows), markdown(meta, rows), args.out)
    print(f"wrote {Path(args.out) / stem}.json/.md", flush=True)


def self_supervised_checks(rows):
    """Each self-supervised model row against the supervised row of the same steps (issue bar: within 1 dB)."""
    supervised = {(r["parameter"].split(",")[0], r["parameter"].split(" steps")[0].split()[-1]): r
                  for r in rows if "loss supervised" in r.get("parameter", "")}
    lines = []
    for r in rows:
        p = r.get("parameter", "")
        if "loss " not in p or "loss supervised" in p:
            continue
        ref = supervised.get((p.split(",")[0], p.split(" steps")[0].split()[-1]))
        if ref is None:
            continue
        gap = r["test"][0] - ref["test"][0]
        lines.append(f"- {r['method']} - {ref['method']} on the test ellipses: {gap:+.2f} dB (bar >= -1 dB: "
                     f"{'met' if gap >= -1 else 'not met'}); Shepp-Logan {r['shepp_logan'][0] - ref['shepp_logan'][0]:+.2f} dB")
    return lines


LABELS = dict(fbp="FBP", tv="TV (PDHG)", admm_tv="ADMM-TV", pnp_admm="PnP-ADMM (DnCNN)", red="RED (DnCNN)")


def markdown(meta, rows):
    d, t = meta["data"], meta["denoiser_train"]
    lines = [
        f"# Plug-and-play, ADMM and self-supervised rows: preset `{meta['preset']}`",
        "",
        f"`python benchmarks/priors.py` on {meta['device_kind']} ({meta['cpu_count']} CPU cores visible), "
        f"jax {meta['jax']}, {meta['date']}; whole run {meta['total_seconds'] / 60:.1f} min"
        + (" (smoke run: tiny sets and iterations, numbers meaningless)." if meta["smoke"] else "."),
        "",
        f"Data as in `comparison_{meta['preset']}.md`: {d['size']} x {d['size']}, {d['num_angles']} views, "
        f"{100 * d['noise']:g}% noise; 16 test ellipses and Shepp-Logan. Every parameter: best mean PSNR on the "
        f"validation ellipses (the plug-and-play grids: on the first {GRID_VALIDATION}). Denoiser: conditional DnCNN, {t['steps']} steps x batch {t['batch_size']} on "
        "random-ellipse images with Gaussian noise (no sinograms). Reconstruction time: one Shepp-Logan "
        "reconstruction" + (" after a warm-up call." if meta.get("warm_timing") else
                            "; for ADMM-TV, PnP-ADMM and RED the first call, compilation included (this run "
                            "predates the warm-up)."),
        "",
    ]
    table = [[LABELS.get(r["method"], r["method"]), fmt(r["shepp_logan"][0]), fmt(r["shepp_logan"][1], "{:.3f}"),
              fmt(r["test"][0]), fmt(r["test"][1], "{:.3f}"), f"{r['seconds']:.3f}",
              r["parameter"].replace("||A||", "‖A‖")] for r in rows]
    lines += markdown_table(["method", "Shepp-Logan PSNR (dB)", "SSIM", "test ellipses PSNR", "SSIM",
                             "recon. time (s)", "setting"], table)
    for item in meta.get("appended", []):
        lines += ["", f"Rows {'; '.join(repr(m) for m in item['models'])} appended with `--append` on {item['date']}."]
    checks = self_supervised_checks(rows)
    if checks:
        lines += ["", "Self-supervised against supervised training of the same model and steps:", ""] + checks
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
