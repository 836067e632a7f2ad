"""Report a long training run against the comparison's TV and shipped rows on the same data.

    jaxrecon train --model lpd --preset quick --steps 12000 --minutes 150 \\
        --output benchmarks/runs/long/lpd_quick_12k            # resumable: run it again until done
    python benchmarks/long_run.py benchmarks/runs/long/lpd_quick_12k

Evaluates the run's newest checkpoint on Shepp-Logan and on the 16 test ellipses of its preset (the
same seed, keys and truth as `comparison.py`), and writes `results/long_<run>.{json,md,png}`: the
validation curve beside the curve of the comparison's row for the same model and TV's best
validation PSNR, and the test table beside the comparison's TV and model rows. A run that has not
reached its last step is reported as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

from harness import RESULTS, machine, markdown_table, pyplot, save_figure, write_results
from jaxrecon.train import batch_keys, evaluate, latest_checkpoint, shepp_logan_sample
from jaxrecon.train.experiment import load_trained


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="checkpoint folder written by `jaxrecon train`")
    ap.add_argument("--reference", type=Path, default=None,
                    help="comparison JSON to compare with (default results/comparison_<preset>.json)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    checkpoint = args.run if (args.run / "config.json").is_file() else latest_checkpoint(args.run)
    if checkpoint is None:
        ap.error(f"{str(args.run)!r} is not a checkpoint folder written by `jaxrecon train`")

    model, data, config = load_trained(checkpoint)
    history = json.loads((checkpoint / "config.json").read_text())["history"]
    preset, name = config["preset"], config["model"]
    reference = args.reference or RESULTS / f"comparison_{preset}.json"
    ref = {r["method"]: r for r in json.loads(reference.read_text())["rows"]}
    if name not in ref or "tv" not in ref:
        ap.error(f"{reference} has no rows for 'tv' and {name!r}")

    op = data.operator
    sl = jax.tree.map(lambda a: a[None], shepp_logan_sample(data))
    test = jax.jit(jax.vmap(data.sample))(batch_keys(config["seed"], "test", 0, 16))
    ev_sl, ev_test = evaluate(model, op, sl), evaluate(model, op, test, timed=False)
    steps_done, steps = history["step"][-1] + 1, config["train"]["steps"]
    tv = ref["tv"]
    row = dict(method=f"{name} (this run)", steps=steps_done, of_steps=steps,
               train_seconds=float(history["time"][-1]),
               shepp_logan=[ev_sl["psnr_mean"], ev_sl["ssim_mean"]], test=[ev_test["psnr_mean"], ev_test["ssim_mean"]],
               validation_step=history.get("val_step", []), validation_psnr=history.get("val_psnr_mean", []))
    result = dict(machine=machine(), run=str(args.run), reference=str(reference), config=config, row=row,
                  minus_tv={"shepp_logan": row["shepp_logan"][0] - tv["shepp_logan"][0],
                            "test": row["test"][0] - tv["test"][0]},
                  tv_validation_best=max(tv["validation_psnr"]))

    vals = row["validation_psnr"]
    best_validation = f"{max(vals):.2f} dB" if vals else "none yet"
    stem = f"long_{args.run.name}"
    lines = [f"# Long training run `{args.run.name}`: {name}, preset `{preset}`", "",
             f"`python benchmarks/long_run.py {args.run}`; trained with `jaxrecon train --model {name} "
             f"--preset {preset} --steps {steps}` (resumed across invocations), "
             f"{steps_done} of {steps} steps done, {row['train_seconds'] / 60:.0f} min of training.", ""]
    table = []
    for r, label, setting in ((tv, "TV (PDHG)", tv["parameter"]),
                              (ref[name], f"{name} (comparison row)", ref[name]["parameter"]),
                              (row, row["method"], f"{steps_done} steps x batch {config['train']['batch_size']}")):
        table.append([label, f"{r['shepp_logan'][0]:.2f}", f"{r['shepp_logan'][1]:.3f}", f"{r['test'][0]:.2f}",
                      f"{r['test'][1]:.3f}", setting])
    lines += markdown_table(["method", "Shepp-Logan PSNR (dB)", "SSIM", "test ellipses PSNR", "SSIM", "setting"], table)
    lines += ["", f"This run minus TV: {result['minus_tv']['shepp_logan']:+.2f} dB on Shepp-Logan, "
              f"{result['minus_tv']['test']:+.2f} dB on the test ellipses. Best validation PSNR: this run "
              f"{best_validation}, TV {result['tv_validation_best']:.2f} dB.", "",
              f"![validation curves]({stem}.png)"]
    write_results(stem, result, "\n".join(lines), args.out)
    _figure(row, ref[name], result["tv_validation_best"], args.out / f"{stem}.png")
    print("\n".join(lines))


def _figure(row, reference, tv_best, path):
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.plot(row["validation_step"], row["validation_psnr"], label=row["method"])
    ax.plot(reference.get("validation_step", []), reference.get("validation_psnr", []),
            label=f"comparison row ({reference['parameter']})")
    ax.axhline(tv_best, color="k", ls="--", lw=1, label="TV, best weight on the validation set")
    ax.set(xlabel="training step", ylabel="validation PSNR (dB)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
