"""Our learned primal-dual against a PyTorch peer built from DeepInverse's blocks, on the same data.

Both train on exactly the same batches (our random-ellipse stream, exported to `.npy`), with the
same operator (our projector's sparse matrix, divided by its norm on both sides), steps, batch size,
optimiser (Adam, lr cosine-decayed to 0, gradient clipped to global norm 1) and validation set;
both validation curves are scored by the same PSNR/SSIM code. The peer runs in its own venv
(`benchmarks/.venvs/torch`: torch 2.13.0 CPU and deepinv 0.5.0, made on first use).

Our rows: `paper` is the paper's LPD (zero start, default initialisation), the like-for-like
comparison with the peer; `quick` is the quick preset's recipe (FBP start, last layers scaled by 0.1).

    python benchmarks/peer_training.py --steps 2000              # ~1 h on 2 cores
    python benchmarks/peer_training.py --steps 4 --smoke         # seconds; writes to /tmp

Writes benchmarks/results/peer_training.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import HERE, RESULTS, command, machine, markdown_table, median_seconds, peer_python, pyplot, save_figure
from harness import write_results
from jaxrecon.nets import LearnedPrimalDual
from jaxrecon.train import Sample, batch_keys, evaluate, fit
from jaxrecon.train.experiment import build_data, experiment_config
from jaxrecon.train.loop import _train_step, default_optimizer, reconstruction_loss_fn

PEER_REQUIREMENTS = [["torch==2.13.0", "numpy"], ["--no-deps", "deepinv==0.5.0"]]
LABELS = {"peer": "PyTorch peer (DeepInverse blocks)", "paper": "jaxrecon, paper form (zero start)",
          "quick": "jaxrecon, quick recipe (FBP start)"}
OURS = {
    "paper": dict(init="zero", last_scale=1.0),
    "quick": dict(init="fbp", last_scale=0.1),
}


def export_operator(op, folder: Path):
    """The operator's sparse matrix (COO rows, cols, values of its nonzeros) as `.npy` files."""
    n = int(np.prod(op.in_shape))
    columns = jax.jit(jax.vmap(lambda e: op(e.reshape(op.in_shape)).ravel()))
    rows, cols, vals = [], [], []
    for j in range(0, n, 512):
        block = np.asarray(columns(jnp.eye(n, dtype=jnp.float32)[j:j + 512]))  # (512, m): columns j.. of A
        c, r = np.nonzero(block)
        rows.append(r), cols.append(c + j), vals.append(block[c, r])
    for name, arr in (("op_rows", rows), ("op_cols", cols), ("op_vals", vals)):
        np.save(folder / f"{name}.npy", np.concatenate(arr))


def export(data, config, steps, folder: Path):
    """Training batches, validation set and the operator's sparse matrix as `.npy` files."""
    t, seed, bs = config["train"], config["seed"], config["train"]["batch_size"]
    sample = jax.jit(jax.vmap(data.sample))
    chunks = [sample(batch_keys(seed, "train", k * bs, min(256, steps * bs - k * bs)))
              for k in range(0, steps, 256 // bs)]
    train = Sample(*(np.concatenate([np.asarray(getattr(c, f)) for c in chunks]) for f in ("y", "x")))
    val = sample(batch_keys(seed, "validation", 0, t["validation_size"]))
    export_operator(data.operator, folder)
    for name, arr in (("train_y", train.y), ("train_x", train.x), ("val_y", val.y), ("val_x", val.x)):
        np.save(folder / f"{name}.npy", arr)
    return train, val


def train_ours(name, data, config, train, val, steps, progress):
    op = data.operator
    model = LearnedPrimalDual(op, key=jax.random.key(config["seed"]), **OURS[name])
    t, bs = config["train"], config["train"]["batch_size"]
    ys, xs = jnp.asarray(train.y), jnp.asarray(train.x)
    result = fit(model, reconstruction_loss_fn(op), lambda k: Sample(ys[k * bs:(k + 1) * bs], xs[k * bs:(k + 1) * bs]),
                 default_optimizer(t["learning_rate"], num_steps=steps, clip=t["clip"]), steps,
                 validate_fn=lambda m: evaluate(m, op, val, timed=False), validate_every=t["validate_every"],
                 progress=progress)
    h = result.history
    opt = default_optimizer(t["learning_rate"], num_steps=steps, clip=t["clip"])
    state = opt.init(eqx.filter(result.model, eqx.is_inexact_array))
    step = lambda m, s: _train_step(m, s, Sample(ys[:bs], xs[:bs]), reconstruction_loss_fn(op), opt, None)  # noqa: E731
    seconds, _ = median_seconds(step, result.model, state, repeats=10)  # the step `fit` runs, timed alone
    return dict(val_step=h["val_step"], val_psnr=h["val_psnr_mean"], val_ssim=h["val_ssim_mean"], loss=h["loss"],
                step_seconds_median=seconds, compile_seconds=h["compile_seconds"][0])


def train_peer(folder, val, steps, progress):
    python = peer_python("torch", PEER_REQUIREMENTS)
    subprocess.run([python, str(HERE / "peers" / "lpd_deepinv.py"), str(folder)], check=True)
    peer = json.loads((folder / "peer" / "peer.json").read_text())
    from jaxrecon.train.evaluate import _metrics

    steps_done = sorted(int(p.stem[4:]) for p in (folder / "peer").glob("val_*.npy"))
    scores = [_metrics(jnp.asarray(np.load(folder / "peer" / f"val_{s}.npy")), jnp.asarray(val.x)) for s in steps_done]
    return dict(val_step=steps_done, val_psnr=[float(np.mean(p)) for p, _ in scores],
                val_ssim=[float(np.mean(s)) for _, s in scores], loss=peer["loss"],
                step_seconds_median=float(np.median(peer["step_seconds"][1:])), parameters=peer["parameters"],
                torch=peer["torch"], threads=peer["threads"])


def markdown(res) -> str:
    cfg, runs = res["config"], res["runs"]
    names = list(runs)
    steps = runs[names[0]]["val_step"]
    lines = [
        "# Learned primal-dual: jaxrecon against a PyTorch peer (DeepInverse blocks) on the same data",
        "",
        f"`{res['command']}` on {res['machine']['device']} ({res['machine']['cpu_count']} cores), jax "
        f"{res['machine']['jax']}, torch {runs.get('peer', {}).get('torch', '-')}, {res['machine']['date']}; "
        f"whole run {res['total_seconds'] / 60:.1f} min.",
        "",
        f"Quick preset data ({cfg['data']['size']} x {cfg['data']['size']}, {cfg['data']['num_angles']} views, "
        f"{100 * cfg['data']['noise']:g}% noise), {res['steps']} steps x batch {cfg['train']['batch_size']}, "
        f"Adam lr {cfg['train']['learning_rate']:g} cosine to 0, clip 1; the same batches, operator and "
        f"{cfg['train']['validation_size']} validation ellipses for every row.",
        "",
    ]
    lines += markdown_table(["step", *(f"{LABELS[n]} PSNR" for n in names)],
                            [[s, *(f"{runs[n]['val_psnr'][i]:.2f}" for n in names)] for i, s in enumerate(steps)])
    lines += [""] + markdown_table(["run", "final PSNR", "final SSIM", "median step (s)"], [
        [LABELS[n], f"{runs[n]['val_psnr'][-1]:.2f}", f"{runs[n]['val_ssim'][-1]:.3f}",
         f"{runs[n]['step_seconds_median']:.3f}"] for n in names])
    lines += ["", "Step times: the peer's are the median of its training steps; ours, the median of 10 of the same "
              "jitted steps timed alone after training. `benchmarks/training_speed.py` times both alone."]
    for name, value in res.get("checks", {}).items():
        lines.append(f"\n- {name}: {value}")
    return "\n".join(lines)


def figure(res, path):
    fig, ax = pyplot().subplots(figsize=(5, 3.4))
    for name, r in res["runs"].items():
        ax.plot(r["val_step"], r["val_psnr"], marker="o", ms=3, label=LABELS[name])
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR (dB)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--runs", default="peer,paper,quick", help="from: peer, " + ", ".join(OURS))
    ap.add_argument("--smoke", action="store_true", help="tiny run, results to a temporary folder")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    config = experiment_config("lpd", "quick", train={"validate_every": args.validate_every})
    if args.smoke:
        config["train"]["validation_size"] = 2
    data = build_data(config)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = set(names) - {"peer", *OURS}
    if unknown:
        ap.error(f"unknown runs {sorted(unknown)}; expected some of peer, {', '.join(OURS)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, val = export(data, config, args.steps, folder)
        (folder / "config.json").write_text(json.dumps(dict(
            seed=config["seed"], threads=2, steps=args.steps, batch_size=config["train"]["batch_size"],
            learning_rate=config["train"]["learning_rate"], clip=config["train"]["clip"],
            validate_every=args.validate_every, image_shape=list(data.operator.in_shape),
            data_shape=list(data.operator.out_shape),
            op_norm=float(LearnedPrimalDual(data.operator, key=jax.random.key(0)).op_norm))))
        runs = {}
        for name in names:
            print(f"training {name}", flush=True)
            runs[name] = (train_peer(folder, val, args.steps, not args.no_progress) if name == "peer"
                          else train_ours(name, data, config, train, val, args.steps, not args.no_progress))
            report(args, argv, config, runs, t0)  # after every run, so a long benchmark shows what it has


def report(args, argv, config, runs, t0):
    res = dict(command=command(__file__, argv), steps=args.steps,
               config=config, machine=machine(), runs=runs, total_seconds=time.time() - t0)
    if "peer" in runs and "paper" in runs:
        p, o = runs["peer"], runs["paper"]
        res["checks"] = {
            "PSNR ours (paper form) - peer at the last step (bar >= -0.3 dB)": round(o["val_psnr"][-1] - p["val_psnr"][-1], 2),
            "step time ours / peer (bar <= 1.0)": round(o["step_seconds_median"] / p["step_seconds_median"], 3),
        }
    out = Path(tempfile.mkdtemp()) if args.smoke else RESULTS
    js, md = write_results("peer_training", res, markdown(res), out)
    figure(res, out / "peer_training.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
