"""Robustness benchmark: worst-case vs random perturbations of classical and learned CT reconstruction.

After Antun, Renna, Poon, Adcock & Hansen, "On instabilities of deep learning in image reconstruction
and the potential costs of AI" (PNAS 2020). For each method $f$ and each image $x$ (Shepp-Logan and
held-out test ellipses, measured as in training: exact sinogram plus 5% noise, $y$) an image-space
perturbation $r$ with the same norm budget for every method,

$$\\|r\\| \\le \\varepsilon\\,\\|x\\| \\qquad (\\varepsilon \\in \\{0.01, 0.02, 0.05\\} \\text{ by default}),$$

enters the data as $y + Ar$ ($A$ the discrete Radon transform). Reported, per method and
$\\varepsilon$: the PSNR of $f(y)$ against $x$ (no perturbation), and the PSNR of $f(y + Ar)$
against the perturbed truth $x + r$ (what a stable method should return) for a random $r$ (mean over
`--num-random` Gaussian directions, `random_perturbation`) and for the worst case found by projected
normalised gradient ascent on $\\|f(y + Ar) - f(y)\\|^2$ (`worst_case_perturbation`, `--steps`
steps from a small random start, the best iterate kept), with the relative change
$\\|f(y + Ar) - f(y)\\|/\\|x\\|$ and the relative size of the data perturbation $\\|Ar\\|/\\|y\\|$.

Methods: FBP (filter chosen on validation), TV (PDHG, weight chosen on validation; the ascent
differentiates through its `--tv-iterations` iterations), FBP + U-Net, learned gradient descent,
learned primal-dual and the deep equilibrium DE-Grad (the ascent differentiates implicitly through
its fixed point), loaded with `load_trained` from `--runs/<model>` (default
benchmarks/runs/quick/<model>, written by benchmarks/comparison.py) or from `--checkpoint NAME=PATH`.

    python benchmarks/robustness.py
    python benchmarks/robustness.py --checkpoint lpd=jaxrecon/pretrained/lpd_quick --eps 0.01,0.02,0.05
    python benchmarks/robustness.py --smoke --out /tmp/robustness_smoke   # tiny models trained here

Writes <out>/robustness.json, .md and .png (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import HERE, RESULTS, at_least, choose_tv_weight, command, environment, floats, markdown_table, mean_psnr
from harness import pyplot, save_figure, write_results
from jaxrecon.adapt.robustness import random_perturbation, worst_case_perturbation
from jaxrecon.metrics import psnr
from jaxrecon.operators import fbp
from jaxrecon.operators.fbp import FBP_FILTERS
from jaxrecon.solvers import tv_pdhg
from jaxrecon.train import batch_keys, shepp_logan_sample
from jaxrecon.train.experiment import build_data, experiment_config, load_trained, train

METHODS = ("fbp", "tv", "unet", "lgd", "lpd", "degrad")
LEARNED = ("unet", "lgd", "lpd", "degrad")
LABELS = {"fbp": "FBP", "tv": "TV (PDHG)", "unet": "FBP + U-Net", "lgd": "Learned gradient descent",
          "lpd": "Learned primal-dual", "degrad": "DE-Grad (deep equilibrium)"}


# --------------------------------------------------------------------------------------------------
# Reconstruction methods as pytrees `rec(y) -> x` (arrays traced, not baked into compiled code)
# --------------------------------------------------------------------------------------------------


def _fbp(geom, filter_name, y):
    return fbp(y, geom, filter_name)


def _tv(op, alpha, op_norm, iterations, y):
    return tv_pdhg(op, y, alpha, max_iter=iterations, op_norm=op_norm).x


def _learned(model, op, y):
    return model(y, op)


@eqx.filter_jit
def _batch(rec, ys):
    return jax.vmap(rec)(ys)


def choose_fbp(geom, val):
    scores = {f: mean_psnr(_batch(eqx.Partial(_fbp, geom, f), val.y), val.x) for f in FBP_FILTERS}
    best = max(scores, key=scores.get)
    return eqx.Partial(_fbp, geom, best), dict(filter=best, validation_psnr=scores)


def choose_tv(op, val, alphas, iterations):
    best, a, op_norm, scores = choose_tv_weight(op, val, alphas, iterations)
    rec = eqx.Partial(_tv, op, a[best], op_norm, iterations)
    return rec, dict(alpha=float(alphas[best]), iterations=iterations, alphas=[float(v) for v in alphas],
                     validation_psnr=[float(v) for v in scores])


# --------------------------------------------------------------------------------------------------
# The attack on one image, all eps at once
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def attack(rec, op, x, y, eps, key, num_random: int, steps: int):
    """Clean, worst-case and random reconstructions of one image for every `eps` (vmapped)."""
    x_norm = jnp.linalg.norm(x)
    k_worst, k_rand = jax.random.split(key)
    fy = rec(y)
    worst = jax.vmap(
        lambda e: worst_case_perturbation(rec, y, op, eps=e, x_norm=x_norm, steps=steps, key=k_worst))(eps)
    x_worst = jax.vmap(lambda r: rec(y + op(r).astype(y.dtype)))(worst.r)
    keys = jax.random.split(k_rand, num_random)
    rand = jax.vmap(
        lambda e: jax.vmap(lambda k: random_perturbation(rec, y, op, eps=e, x_norm=x_norm, key=k))(keys))(eps)
    x_rand = jax.vmap(jax.vmap(lambda r: rec(y + op(r).astype(y.dtype))))(rand.r)
    return fy, worst, x_worst, rand, x_rand


def _psnr(a, ref, data_range) -> float:
    return float(psnr(jnp.asarray(a, ref.dtype), ref, data_range=data_range))


def evaluate_image(rec, op, x, y, eps, key, num_random, steps) -> tuple[dict, dict]:
    """Per-eps numbers for one image, and the arrays for the figure."""
    fy, worst, x_worst, rand, x_rand = attack(rec, op, x, y, jnp.asarray(eps, y.dtype), key, num_random, steps)
    dr = float(x.max() - x.min())  # PSNRs use the clean truth's range throughout
    xn = float(jnp.linalg.norm(x))
    clean = _psnr(fy, x, dr)
    per_eps = []
    for i, e in enumerate(eps):
        rw = worst.r[i]
        per_eps.append(dict(
            eps=float(e), clean=clean,
            worst=_psnr(x_worst[i], x + rw, dr), worst_vs_x=_psnr(x_worst[i], x, dr),
            worst_change=float(worst.error[i]) / xn, worst_data=float(worst.size["relative_data"][i]),
            worst_norm=float(worst.size["relative"][i]),
            worst_trace=[float(v) / xn for v in np.asarray(worst.history["error"][i])],
            random=float(np.mean([_psnr(x_rand[i, k], x + rand.r[i, k], dr) for k in range(num_random)])),
            random_vs_x=float(np.mean([_psnr(x_rand[i, k], x, dr) for k in range(num_random)])),
            random_change=float(np.mean(np.asarray(rand.error[i]))) / xn,
            random_data=float(np.mean(np.asarray(rand.size["relative_data"][i]))),
        ))
    arrays = dict(clean=np.asarray(fy), r_worst=np.asarray(worst.r), x_worst=np.asarray(x_worst),
                  x_random=np.asarray(x_rand[:, 0]), r_random=np.asarray(rand.r[:, 0]))
    return per_eps, arrays


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"from {METHODS}")
    ap.add_argument("--runs", default=str(HERE / "runs" / "quick"), help="folder of <model> checkpoint runs")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="checkpoint of a learned method (overrides --runs/NAME); repeatable")
    ap.add_argument("--eps", type=floats, default=[0.01, 0.02, 0.05], help="relative norm budgets ||r|| / ||x||")
    ap.add_argument("--num-test", type=int, default=2, help="test ellipses besides Shepp-Logan")
    ap.add_argument("--num-val", type=int, default=16, help="validation ellipses for the FBP filter and TV weight")
    ap.add_argument("--num-random", type=int, default=5, help="random directions per eps")
    ap.add_argument("--steps", type=int, default=100, help="gradient ascent steps of the worst case")
    ap.add_argument("--tv-iterations", type=int, default=500)
    ap.add_argument("--tv-alphas", type=floats, default=list(np.geomspace(0.05, 20.0, 14)))
    ap.add_argument("--figure-eps", type=float, default=None, help="eps shown in the figure (default: the largest)")
    ap.add_argument("--seed", type=int, default=0, help="key of the random starts and directions")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--smoke", action="store_true", help="32 x 32, tiny learned models trained here (~2 min)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = set(args.methods) - set(METHODS)
    if bad:
        ap.error(f"unknown methods {sorted(bad)}; expected some of {METHODS}")
    if not args.eps or any(not 0 < e for e in args.eps):
        ap.error(f"--eps must be positive numbers, got {args.eps}")
    at_least(ap, args, 0, "num_test")
    at_least(ap, args, 1, "num_val", "num_random", "steps", "tv_iterations")
    paths = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or name not in LEARNED:
            ap.error(f"--checkpoint expects NAME=PATH with NAME in {LEARNED}, got {item!r}")
        paths[name] = Path(path)
    args.paths = paths
    return ap, args


SMOKE = dict(eps=[0.01, 0.05], num_test=1, num_val=4, num_random=2, steps=5, tv_iterations=30, tv_alphas=[0.1, 1.0])
SMOKE_MODELS = {"unet": dict(channels=4, levels=2), "lgd": dict(num_iterations=2, hidden=8, num_memory=2),
                "lpd": dict(num_iterations=2, hidden=8, num_primal=2, num_dual=2), "degrad": dict(features=4, depth=2)}


def load_models(args, progress):
    """`{name: (model, config, source)}` for the learned methods requested."""
    out = {}
    for name in [m for m in args.methods if m in LEARNED]:
        if args.smoke:
            config = experiment_config(name, "quick", data=dict(size=32, num_detectors=45),
                                       model_options=SMOKE_MODELS[name],
                                       train=dict(steps=10, validation_size=4, validate_every=10))
            out[name] = (train(config, None, progress=progress).model, config, "tiny, trained 10 steps (smoke)")
            continue
        path = args.paths.get(name, Path(args.runs) / name)
        if not path.exists():
            raise SystemExit(f"no checkpoint for {name} at {path}: run benchmarks/comparison.py --preset quick, pass "
                             f"--checkpoint {name}=PATH, or leave it out of --methods")
        model, _, config = load_trained(path)
        out[name] = (model, config, str(path))
    return out


def main(argv=None):
    ap, args = parse(argv)
    start = time.perf_counter()
    progress = not args.no_progress
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    models = load_models(args, progress)
    configs = [c for _, c, _ in models.values()]
    config = configs[0] if configs else experiment_config("lpd", "quick")
    for name, (_, c, src) in models.items():
        if c["data"] != config["data"]:
            raise SystemExit(f"{name} ({src}) was trained on {c['data']}, the others on {config['data']}")
    dtype = jax.tree.leaves(eqx.filter(next(iter(models.values()))[0], eqx.is_inexact_array))[0].dtype if models \
        else None
    data = build_data(config, dtype)
    op, geom, seed = data.operator, data.geometry, config["seed"]
    sample = eqx.filter_jit(lambda d, k: jax.vmap(d.sample)(k))
    val = sample(data, batch_keys(seed, "validation", 0, args.num_val))
    images = [("shepp_logan", shepp_logan_sample(data))]
    if args.num_test:
        test = sample(data, batch_keys(seed, "test", 0, args.num_test))
        images += [(f"test_{i}", jax.tree.map(lambda a, i=i: a[i], test)) for i in range(args.num_test)]

    recs, settings = {}, {}
    for name in args.methods:
        if name == "fbp":
            recs[name], settings[name] = choose_fbp(geom, val)
        elif name == "tv":
            recs[name], settings[name] = choose_tv(op, val, args.tv_alphas, args.tv_iterations)
        else:
            model, c, src = models[name]
            recs[name], settings[name] = eqx.Partial(_learned, model, op), dict(checkpoint=src, config=c)

    results, figure_data = {}, {}
    key = jax.random.key(args.seed)
    for name in args.methods:
        t0 = time.perf_counter()
        per_image = {}
        for j, (label, s) in enumerate(images):
            per_image[label], arrays = evaluate_image(recs[name], op, s.x, s.y, args.eps, jax.random.fold_in(key, j),
                                                      args.num_random, args.steps)
            if label == "shepp_logan":
                figure_data[name] = arrays
        results[name] = dict(method=name, setting={k: v for k, v in settings[name].items() if k != "config"},
                             images=per_image, summary=summarise(per_image, args.eps),
                             seconds=time.perf_counter() - t0)
        for e in results[name]["summary"]:
            print(f"  {name:5s} eps {e['eps']:.3g}: Shepp-Logan clean {e['shepp_logan']['clean']:.2f} / random "
                  f"{e['shepp_logan']['random']:.2f} / worst {e['shepp_logan']['worst']:.2f} dB (change "
                  f"{e['shepp_logan']['worst_change']:.3f})", flush=True)
        print(f"  {name}: {results[name]['seconds']:.0f} s", flush=True)

    total = time.perf_counter() - start
    meta = dict(config=config, smoke=args.smoke, eps=args.eps, num_test=args.num_test, num_random=args.num_random,
                steps=args.steps, tv_iterations=args.tv_iterations, seed=args.seed, total_seconds=total,
                **environment("devices", "platform", "cpu_count", "jax", "date"), command=command(__file__, argv))
    out = Path(args.out)
    write_results("robustness", dict(meta=meta, results=results), markdown(meta, results), out)
    figure(images[0][1].x, figure_data, results, args.eps, args.figure_eps, out / "robustness.png")
    print(f"total {total / 60:.1f} min; wrote {out}/robustness.json/.md/.png", flush=True)


def summarise(per_image: dict, eps) -> list[dict]:
    """Per eps: the Shepp-Logan numbers and the mean over the test ellipses."""
    keys = ("clean", "random", "worst", "random_change", "worst_change", "random_data", "worst_data")
    tests = [v for k, v in per_image.items() if k != "shepp_logan"]
    out = []
    for i, e in enumerate(eps):
        row = dict(eps=float(e), shepp_logan={k: per_image["shepp_logan"][i][k] for k in keys})
        if tests:
            row["test"] = {k: float(np.mean([t[i][k] for t in tests])) for k in keys}
        out.append(row)
    return out


def _shown(checkpoint: str) -> str:
    """A checkpoint path as shown in the report: relative to the repository when inside it."""
    p = Path(checkpoint)
    return str(p.relative_to(HERE.parent)) if p.is_absolute() and p.is_relative_to(HERE.parent) else checkpoint


def markdown(meta, results) -> str:
    d = meta["config"]["data"]
    lines = [
        "# Worst-case and random perturbations"
        + (" (SMOKE RUN: tiny models, numbers meaningless)" if meta["smoke"] else ""),
        "",
        f"`{meta['command']}` on {meta['platform']} ({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, "
        f"{meta['date']}; whole run {meta['total_seconds'] / 60:.1f} min.",
        "",
        f"Setting: {d['size']} x {d['size']} images, {d['num_angles']} views, {d['num_detectors']} detectors, "
        f"{100 * d['noise']:g}% noise (exact sinograms). A perturbation $r$ with $\\|r\\| \\le \\varepsilon\\|x\\|$ "
        "(the same budget for every method) is added to the image, i.e. $Ar$ to the data. PSNR (dB, peak = range "
        "of the clean truth): clean = $f(y)$ vs $x$; random / worst = $f(y + Ar)$ vs $x + r$, random averaged "
        f"over {meta['num_random']} Gaussian directions, worst case by {meta['steps']} steps of projected "
        "normalised gradient ascent on $\\|f(y + Ar) - f(y)\\|^2$. Change = $\\|f(y + Ar) - f(y)\\|/\\|x\\|$; "
        "$\\|Ar\\|/\\|y\\|$ = relative size of the data perturbation. Cells: Shepp-Logan / mean of "
        f"{meta['num_test']} test ellipses.",
        "",
    ]

    def cell(row, k, digits):
        value = (lambda part: part["clean"] - part["worst"]) if k == "drop" else (lambda part: part[k])
        sl = f"{value(row['shepp_logan']):.{digits}f}"
        return sl + (f" / {value(row['test']):.{digits}f}" if "test" in row else "")

    rows = []
    for name, res in results.items():
        s = res["setting"]
        setting = (f"filter {s['filter']}" if name == "fbp" else
                   f"alpha {s['alpha']:.3g}, {s['iterations']} it." if name == "tv" else f"`{_shown(s['checkpoint'])}`")
        rows += [[LABELS[name], f"{row['eps']:g}", cell(row, "clean", 2), cell(row, "random", 2), cell(row, "worst", 2),
                  cell(row, "drop", 2), cell(row, "random_change", 4), cell(row, "worst_change", 4),
                  cell(row, "worst_data", 4), setting] for row in res["summary"]]
    lines += markdown_table(["method", "eps", "clean PSNR", "random PSNR", "worst PSNR", "worst-case drop (dB)",
                             "random change", "worst change", "worst ‖Ar‖/‖y‖", "setting"], rows)
    return "\n".join(lines) + "\n"


def figure(truth, figure_data, results, eps, figure_eps, path: Path):
    i = int(np.argmax(eps)) if figure_eps is None else int(np.argmin(np.abs(np.asarray(eps) - figure_eps)))
    e = eps[i]
    cols = ["clean $f(y)$", f"worst $r$ (eps {e:g})", "$f(y + Ar)$, worst", "$f(y + Ar) - f(y)$, worst",
            "$f(y + Ar)$, random"]
    names = list(figure_data)
    fig, axes = pyplot().subplots(len(names), len(cols), figsize=(2.3 * len(cols), 2.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        a = figure_data[name]
        summ = results[name]["images"]["shepp_logan"][i]
        r = a["r_worst"][i]
        diff = a["x_worst"][i] - a["clean"]
        panels = [(a["clean"], "gray", 0, 1, f"{summ['clean']:.2f} dB"),
                  (r, "seismic", -np.abs(r).max(), np.abs(r).max(), f"max |r| {np.abs(r).max():.3f}"),
                  (a["x_worst"][i], "gray", 0, 1, f"{summ['worst']:.2f} dB"),
                  (diff, "seismic", -np.abs(diff).max(), np.abs(diff).max(), f"change {summ['worst_change']:.3f}"),
                  (a["x_random"][i], "gray", 0, 1, f"{summ['random']:.2f} dB")]
        for col, (img, cmap, lo, hi, note) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title((cols[col] + "\n" if row == 0 else "") + note, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(LABELS[name], fontsize=8)
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
