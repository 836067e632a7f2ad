"""Learned primal-dual: how its initialisation and Adam's b2 change training, on the same batches.

The quick preset's LPD (64 x 64, 30 views, 5% noise, FBP start, last layers x 0.1, batch 4, lr 1e-3
cosine to 0, clip 1), trained for `--steps` with every variant on the same batches and validation set:

- `default`: equinox's initialisation (weights and biases uniform in +-1/sqrt(fan_in), as PyTorch's) and
  Adam b2 = 0.999 (optax's default): the quick recipe before this comparison;
- `glorot`: Glorot-uniform weights and zero biases (TensorFlow's default, the authors' code);
- `b2`: Adam b2 = 0.99 (the authors' code);
- `both`: Glorot and b2 = 0.99, the quick preset's recipe now.

    python benchmarks/lpd_recipe.py --steps 2000                  # ~10 minutes per run on 2 idle cores
    python benchmarks/lpd_recipe.py --steps 4 --smoke             # seconds; writes to /tmp

Writes benchmarks/results/lpd_recipe.{json,md,png}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import RESULTS, command, machine, markdown_table, pyplot, save_figure, write_results
from jaxrecon.train.experiment import experiment_config, train

VARIANTS = {
    "default": dict(weight_init="default", b2=0.999),
    "glorot": dict(weight_init="glorot", b2=0.999),
    "b2": dict(weight_init="default", b2=0.99),
    "both": dict(weight_init="glorot", b2=0.99),
}
LABELS = {"default": "equinox init, b2 0.999", "glorot": "Glorot init, b2 0.999", "b2": "equinox init, b2 0.99",
          "both": "Glorot init, b2 0.99"}


def variant_config(name: str, steps: int, validate_every: int, smoke: bool) -> dict:
    v = VARIANTS[name]
    return experiment_config("lpd", "quick", model_options={"weight_init": v["weight_init"]},
                             train={"b2": v["b2"], "steps": steps, "validate_every": validate_every,
                                    **({"validation_size": 2} if smoke else {})})


def markdown(res) -> str:
    runs, cfg = res["runs"], res["config"]
    names = list(runs)
    lines = [
        "# Learned primal-dual: initialisation and Adam's b2, on the same batches",
        "",
        f"`{res['command']}` on {res['machine']['device']} ({res['machine']['cpu_count']} cores), jax "
        f"{res['machine']['jax']}, {res['machine']['date']}; whole run {res['total_seconds'] / 60:.1f} min.",
        "",
        f"Quick preset LPD ({cfg['data']['size']} x {cfg['data']['size']}, {cfg['data']['num_angles']} views, "
        f"{100 * cfg['data']['noise']:g}% noise; FBP start, last layers x {cfg['model_options']['last_scale']:g}), "
        f"{res['steps']} steps x batch {cfg['train']['batch_size']}, Adam lr {cfg['train']['learning_rate']:g} cosine "
        f"to 0, clip {cfg['train']['clip']:g}; mean PSNR (dB) on the {cfg['train']['validation_size']} validation "
        "ellipses. Every run draws the same batches; only the initialisation and b2 differ.",
        "",
    ]
    steps = runs[names[0]]["val_step"]
    lines += markdown_table(["step", *(LABELS[n] for n in names)],
                            [[s, *(f"{runs[n]['val_psnr'][i]:.2f}" for n in names)] for i, s in enumerate(steps)])
    lines += ["", *markdown_table(["run", "final PSNR", "best PSNR", "training (s)"], [
        [LABELS[n], f"{runs[n]['val_psnr'][-1]:.2f}", f"{max(runs[n]['val_psnr']):.2f}", f"{runs[n]['seconds']:.0f}"]
        for n in names])]
    return "\n".join(lines)


def figure(res, path):
    fig, ax = pyplot().subplots(figsize=(5, 3.4))
    for name, r in res["runs"].items():
        ax.plot(r["val_step"], r["val_psnr"], marker="o", ms=3, label=LABELS[name])
    ax.set(xlabel="training step", ylabel="validation PSNR (dB)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--runs", default="default,both", help="from: " + ", ".join(VARIANTS))
    ap.add_argument("--smoke", action="store_true", help="tiny run, results to a temporary folder")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown or not names:
        ap.error(f"--runs: expected some of {', '.join(VARIANTS)}, got {args.runs!r}")
    if args.steps < 1 or args.validate_every < 1:
        ap.error(f"--steps and --validate-every must be positive, got {args.steps} and {args.validate_every}")
    t0, runs = time.time(), {}
    out = Path(tempfile.mkdtemp()) if args.smoke else RESULTS
    for name in names:
        print(f"training {name} ({LABELS[name]})", flush=True)
        t1 = time.time()
        h = train(variant_config(name, args.steps, args.validate_every, args.smoke), None, progress=False).history
        runs[name] = dict(val_step=h["val_step"], val_psnr=h["val_psnr_mean"], val_ssim=h["val_ssim_mean"],
                          seconds=time.time() - t1, **VARIANTS[name])
        res = dict(command=command(__file__, argv), steps=args.steps, machine=machine(), runs=runs,
                   config=variant_config(names[0], args.steps, args.validate_every, args.smoke),
                   total_seconds=time.time() - t0)
        _, md = write_results("lpd_recipe", res, markdown(res), out)  # after every run
        figure(res, out / "lpd_recipe.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
