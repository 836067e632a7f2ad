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
resumed. Writes <out>/adaptation.json, .md and .png (default benchmarks/results/). The rows are
computed in `adaptation_methods.py`; this script holds the shifts, the checks and the report.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptation_methods import draw, misfit, scores, shift_rows
from harness import HERE, RESULTS, ROOT, at_least, command, environment, floats, fmt, markdown_table, pyplot
from harness import save_figure, write_results
from jaxrecon.adapt.operators import AngleOffset, CentreShift
from jaxrecon.operators import ParallelBeamGeometry
from jaxrecon.train import CTData, reconstruct, shepp_logan_sample
from jaxrecon.train.experiment import experiment_config, load_trained, train

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
# One shift: the rows (adaptation_methods.py) and the checks
# --------------------------------------------------------------------------------------------------


def run_shift(shift, model, config, geom0, args, runs: Path, progress: bool) -> tuple[dict, dict]:
    t_start = time.perf_counter()
    rows, images, units = shift_rows(shift, model, config, geom0, args, runs, progress)
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
    result = dict(shift=shift["name"], label=shift["label"], known_operator=shift["known"], rows=rows, checks=checks,
                  misfit=misfit(model, shift, config, args), **units, seconds=time.perf_counter() - t_start)
    return result, images


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

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
    ap.add_argument("--mu-grid", type=floats, default=[0.0, 1e2, 1e4], help="in units of fit0 / num_params")
    ap.add_argument("--adapt-lr", type=float, default=3e-4)
    ap.add_argument("--dataset-steps", type=int, default=100)
    ap.add_argument("--measurement-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--calibration-steps", type=int, default=200)
    ap.add_argument("--calibration-batch", type=int, default=8, help="measurements per calibration step")
    ap.add_argument("--angle-lr", type=float, default=5e-3, help="calibration Adam step for the angle (rad)")
    ap.add_argument("--centre-lr", type=float, default=5e-2, help="calibration Adam step for the shift (px)")
    ap.add_argument("--rr-grid", type=floats, default=[0.03, 0.1, 0.3, 1.0],
                    help="reuse-and-regularise weights lam, in units of ||A1||^2")
    ap.add_argument("--rr-steps", type=int, default=50, help="reuse-and-regularise Adam steps per measurement")
    ap.add_argument("--rr-lr", type=float, default=3e-3, help="reuse-and-regularise Adam step (image units)")
    ap.add_argument("--chunk", type=int, default=4, help="measurements adapted at once (memory)")
    ap.add_argument("--oracle-steps", type=int, default=None, help="default: the model's own training steps")
    ap.add_argument("--oracle-init", choices=("scratch", "trained"), default="scratch",
                    help="oracle from a fresh initialisation (same seed) or fine-tuned from the trained model")
    ap.add_argument("--tv-iterations", type=int, default=500)
    ap.add_argument("--tv-alphas", type=floats, default=list(np.geomspace(0.05, 20.0, 14)))
    ap.add_argument("--runs", default=str(HERE / "runs" / "adaptation"))
    ap.add_argument("--out", default=str(RESULTS))
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
    at_least(ap, args, 1, "num_test", "num_val", "num_adapt", "select_size", "batch_size", "dataset_steps",
             "measurement_steps", "rr_steps", "calibration_steps", "calibration_batch", "chunk", "tv_iterations",
             "views")
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

    cmd = command(__file__, argv)
    if args.misfit_only:
        rows = []
        for name in args.shifts:
            shift = make_shift(name, geom, d["noise"], args)
            rows.append(dict(shift=name, label=shift["label"], known_operator=shift["known"],
                             misfit=misfit(model, shift, config, args)))
        meta = dict(model=source, command=cmd, num_val=args.num_val, **environment("jax", "date", "platform"))
        _, md = write_results("adaptation_misfit", dict(meta=meta, results=rows), "\n".join(
            ["# Data misfits of the adaptation benchmark's shifts", "", f"`{cmd}`, {meta['date']}, jax {meta['jax']}.",
             "", *misfit_table(rows, args.num_val)]), out)
        print(md.read_text(), flush=True)
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
                    **environment("devices", "platform", "cpu_count", "jax", "date"),
                    options={k: v for k, v in vars(args).items() if k not in ("shifts",)}, shifts=args.shifts,
                    command=cmd)
        write_results("adaptation", dict(meta=meta, results=results), markdown(meta, results), out)
        figure(figures, out / "adaptation.png")
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {out}/adaptation.json/.md/.png", flush=True)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


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


def markdown(meta, results) -> str:
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
        lines += [f"## {res['label']}" + ("" if res["known_operator"] else " (unknown to the model)"), ""]
        lines += markdown_table(["method", "Shepp-Logan PSNR (dB)", "test ellipses PSNR (dB)", "setting"], [
            [LABELS[r["method"]], f"{r['shepp_logan']:.2f}", f"{r['test']:.2f} +- {r['test_std']:.2f}", _setting(r)]
            for r in res["rows"]])
        lines.append("")
    lines += ["## Checks", "",
              "Share of the naive-to-oracle PSNR gap recovered (test ellipses; Shepp-Logan in brackets); "
              f"criterion: at least 0.5 by one of the three methods (not decided, -, when the gap is below {MIN_GAP} dB). "
              "Calibrated parameter (dataset method): criterion within 10% of the truth.", ""]
    rows = []
    for res in results:
        ch = res["checks"]
        t, s = ch["test"], ch["shepp_logan"]
        ds = next(r for r in res["rows"] if r["method"] == "dataset")
        par = (f"{ds['phi']:.4g} vs {ds['true_phi']:.4g} {ds['unit']}" if "phi" in ds else "known")
        rows.append([res["label"], f"{t['gap']:.2f} ({s['gap']:.2f})",
                     *(f"{fmt(t[m])} ({fmt(s[m])})" for m in RECOVERY),
                     _yes(ch["half_gap_recovered"]), par, _yes(ch.get("phi_within_10_percent"))])
    lines += markdown_table(["shift", "gap (dB)", "per measurement", "dataset", "reuse and regularise", ">= 1/2",
                             "parameter", "within 10%"], rows)
    if all("misfit" in res for res in results):
        lines += ["", "## Data misfits", "", *misfit_table(results, meta["options"]["num_val"])]
    return "\n".join(lines) + "\n"


def misfit_table(results, num_val: int) -> list[str]:
    """The markdown table of `misfit` for each shift."""
    lines = [f"Data misfits ||.||^2 on {num_val} validation ellipses, in units of the noise energy "
             "||y - Rf||^2, under the operator the methods are given (shifted when known, nominal otherwise). "
             "Rf: exact line integrals; A x: the discrete projection of the pixel-average truth. A data-fit "
             "loss counts the discretisation error as signal to explain: where the truth's own misfit is several "
             "noise energies, a lower misfit is not a better image (for unknown shifts, the nominal operator's "
             "error adds to it, which calibration removes).", ""]
    lines += markdown_table(["shift", "Rf - A x (discretisation)", "y - A x (truth)", "y - A f(y) (naive)"], [
        [res["label"], f"{res['misfit']['discretisation']:.2f}", f"{res['misfit']['truth']:.2f}",
         f"{res['misfit']['naive']:.2f}"] for res in results])
    return lines + [""]


def figure(figures, path: Path):
    cols = ["truth", "naive", "measurement", "dataset", "rr", "oracle", "tv"]
    fig, axes = pyplot().subplots(len(figures), len(cols), figsize=(2.2 * len(cols), 2.4 * len(figures)), squeeze=False)
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
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
