"""Training-step speed on CPU: LPD, LGD and the U-Net, against the previous blocks and a PyTorch peer.

For each model of the quick preset (64 x 64, 30 views, batch 4) the step that `fit` runs (loss,
gradient, clipped Adam) is timed: median of `--repeats` after a warm-up, compile time apart.

- `ours`: the library as it is (`ConvStack` channels last through `jaxrecon.nets.conv2d`);
- `baseline`: the same model with the ConvStack of before (`eqx.nn.Conv` layer by layer, channels
  first, JAX's own gradient), monkeypatched in for this measurement only (LPD, LGD);
- `peer`: the PyTorch LPD of `peer_training.py` (DeepInverse's blocks, our operator as a sparse
  matrix, 2 threads) in its own venv, same batch.

XLA's cost analysis gives the FLOPs of each compiled step, hence the achieved GFLOP/s, beside a
2048^3 `jnp.dot` (the practical peak of the machine).

    python benchmarks/training_speed.py            # ~5 minutes on 2 cores; run it on a quiet machine

Writes benchmarks/results/training_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import HERE, RESULTS, command, machine, markdown_table, median_seconds, peer_python, write_results
from jaxrecon.nets.blocks import ConvStack
from jaxrecon.train import batch_keys
from jaxrecon.train.experiment import build_data, build_model, experiment_config
from jaxrecon.train.loop import default_optimizer, reconstruction_loss_fn

MODELS = ("lpd", "lgd", "unet")
NOTES = """\
What was tried for the LPD step (2 cores, AMD EPYC with AVX-512, jax 0.10.2, XLA CPU with its YNNPACK
convolutions), and what it gave (measured with the other work on the machine paused):

- Profile (`jax.profiler` with `--xla_cpu_enable_xprof_traceme=true`): convolutions are ~75% of the step,
  the projector ~4%, transposes, bias reductions and PReLU most of the rest. The forward pass is ~0.1 s of
  the step: the backward convolutions dominate.
- Per convolution (batch 4): 32->32 at 64x64 runs at 80-100 GFLOP/s forward, about what a `jnp.dot` of
  the same im2col shape reaches (111 GFLOP/s for (16384, 288) x (288, 32)), half the large-dot peak. The
  narrow layers were the slow ones: the weight gradient of the 32->5 output layer took 5.4 ms against 1.4 ms
  for its forward.
- Kept: `conv2d` computes the weight gradient of narrow layers (output depth < input depth and <= 8) as one
  matrix product per sample, and the blocks run channels last: 0.39 -> 0.35 s per LPD step (median of 5
  interleaved A/B rounds), results equal to float rounding (tests/nets/test_conv2d.py).
- Tried and dropped: a custom VJP for every layer (under `vmap` XLA turned the per-sample weight gradient of
  the wide layers into a grouped convolution, 2x slower); weight gradients by im2col patches (the k^2
  shifted copies cost more memory traffic than the product saves); forward by "product then shifted sum"
  for narrow outputs (its gradient was 2-10x slower); splitting the batch into two independent halves
  (no gain); XLA flags on the whole step (`--xla_cpu_use_onednn`, `--xla_cpu_experimental_onednn_custom_call`,
  YNNPACK fusions off: 0.32 s each, the same as the default; `--xla_cpu_use_xnnpack`: 0.39 s).
- Estimated and not tried: Winograd F(2x2, 3x3) for the 32->32 layers: its batched product would take
  ~1.3 ms instead of 3.6 ms, but its input/output transforms move 4x the activations through memory, so the
  gain would be small and the float32 error larger. bfloat16 convolutions (the CPU has AVX512_BF16) would
  change the numerics.
- Batch size: per-sample step cost 0.094 s (batch 1), 0.101 (2), 0.080 (4), 0.112 (8), 0.114 (16): 4 is best.
- One core vs two: the old LPD step took 0.70 s on one core and 0.47 s on two (1.5x).
- The PyTorch peer first ran 2-5x slower than it should: autograd's backward of a sparse CSR product
  re-sorted the transposed matrix at every call (the peer now applies a stored transpose through a custom
  autograd function), and denormal activations slowed its convolutions after a few hundred steps (it now
  flushes them to zero, as XLA does). Its convolutions are oneDNN's.
"""


def legacy_convstack_call(self, x):
    """ConvStack.__call__ before `conv2d`: eqx.nn.Conv layer by layer, channels first."""
    for layer, activation in zip(self.layers[:-1], self.activations):
        x = activation(layer(x))
    return self.layers[-1](x)


def time_step(name, data, batch, repeats, legacy=False, preset="quick"):
    config = experiment_config(name, preset)
    op = data.operator
    model = build_model(config, op)
    opt = default_optimizer(1e-3, num_steps=1000, clip=1.0)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    loss_fn = reconstruction_loss_fn(op)
    current = ConvStack.__call__
    if legacy:
        ConvStack.__call__ = legacy_convstack_call
    try:
        dynamic, static = eqx.partition((model, state), eqx.is_array)

        @jax.jit  # a fresh jit (and trace) per call: the monkeypatched block is traced, not a cached one
        def step(dynamic, batch):  # what `fit` runs (jaxrecon.train.loop._train_step)
            model, state = eqx.combine(dynamic, static)
            loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
            updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
            return eqx.filter((eqx.apply_updates(model, updates), state), eqx.is_array), loss

        t0 = time.perf_counter()
        compiled = step.lower(dynamic, batch).compile()  # also fills the jit cache: the timed calls reuse it
        compile_seconds = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        flops = (cost if isinstance(cost, dict) else cost[0])["flops"]
        seconds, first = median_seconds(step, dynamic, batch, repeats=repeats)
    finally:
        ConvStack.__call__ = current
    return dict(step_seconds=seconds, compile_seconds=compile_seconds, gflop=flops / 1e9,
                gflops_per_second=flops / seconds / 1e9)


def time_peer(data, repeats):
    from peer_training import PEER_REQUIREMENTS, export_operator
    from jaxrecon.nets import LearnedPrimalDual

    python = peer_python("torch", PEER_REQUIREMENTS)
    op = data.operator
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_operator(op, folder)
        (folder / "config.json").write_text(json.dumps(dict(
            seed=0, threads=2, steps=1000, batch_size=4, learning_rate=1e-3, clip=1.0, validate_every=1000,
            image_shape=list(op.in_shape), data_shape=list(op.out_shape), time_steps=repeats,
            op_norm=float(LearnedPrimalDual(op, key=jax.random.key(0)).op_norm))))
        subprocess.run([python, str(HERE / "peers" / "lpd_deepinv.py"), str(folder)], check=True)
        t = json.loads((folder / "peer" / "timing.json").read_text())
    return dict(step_seconds=float(np.median(t["steps"])), first_step_seconds=t["first"], torch=t["torch"],
                threads=t["threads"])


def markdown(res) -> str:
    rows = res["rows"]
    lines = [
        f"# Training-step speed on CPU ({res['preset']} preset, batch 4)",
        "",
        f"`{res['command']}` on {res['machine']['device']} ({res['machine']['cpu_count']} cores), jax "
        f"{res['machine']['jax']}, {res['machine']['date']}, load average before the run "
        f"{res['machine']['load_average'][0]:.2f} (other work on the machine was paused while it ran). Median of "
        f"{res['repeats']} steps after a warm-up; compile time apart (for the peer: its first step). GFLOP per step "
        "from XLA's cost analysis of the compiled step.",
        "",
        f"Machine reference: a 2048^3 float32 `jnp.dot` runs at {res['dot_gflops']:.0f} GFLOP/s.",
        "",
    ]
    table = []
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["implementation"] == "baseline"), None)
        speedup = f"{base['step_seconds'] / r['step_seconds']:.2f}x" if base and "peer" not in r["implementation"] else ""
        first = r.get("compile_seconds", r.get("first_step_seconds"))
        gflop = f"{r['gflop']:.1f}" if r.get("gflop") else ""
        rate = f"{r['gflops_per_second']:.0f}" if r.get("gflops_per_second") else ""
        table.append([r["model"], r["implementation"], f"{r['step_seconds']:.3f}", f"{first:.1f}", gflop, rate, speedup])
    lines += markdown_table(["model", "implementation", "step (s)", "compile / first step (s)", "GFLOP / step",
                             "GFLOP/s", "speed-up vs baseline"], table)
    lines += ["", "Checks:", ""] + [f"- {k}: {v}" for k, v in res["checks"].items()]
    return "\n".join(lines) + "\n\n" + NOTES


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--preset", default="quick", help="experiment preset (data size, models, batch)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    meta = machine()
    data = build_data(experiment_config("lpd", args.preset))
    batch = jax.jit(jax.vmap(data.sample))(batch_keys(0, "train", 0, 4))
    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    dot_seconds, _ = median_seconds(jax.jit(lambda a: a @ a), a, repeats=10)
    rows = []
    for name in args.models.split(","):
        for legacy in ((False, True) if name in ("lpd", "lgd") else (False,)):
            r = time_step(name, data, batch, args.repeats, legacy, args.preset)
            rows.append(dict(model=name, implementation="baseline" if legacy else "ours", **r))
            print(rows[-1], file=sys.stderr, flush=True)
    if not args.no_peer and "lpd" in args.models:
        rows.append(dict(model="lpd", implementation="peer (PyTorch, DeepInverse blocks)", **time_peer(data, args.repeats)))
    by = {(r["model"], r["implementation"].split(" ")[0]): r for r in rows}
    checks = {}
    if ("lpd", "baseline") in by:
        checks["LPD speed-up over the previous blocks (bar >= 2)"] = round(
            by["lpd", "baseline"]["step_seconds"] / by["lpd", "ours"]["step_seconds"], 2)
    if ("lpd", "peer") in by:
        checks["LPD step ours / peer (bar <= 1.0)"] = round(by["lpd", "ours"]["step_seconds"] / by["lpd", "peer"]["step_seconds"], 2)
    res = dict(command=command(__file__, argv),
               preset=args.preset, machine=meta, repeats=args.repeats, dot_gflops=2 * 2048**3 / dot_seconds / 1e9, rows=rows, checks=checks)
    stem = "training_speed" if args.preset == "quick" else f"training_speed_{args.preset}"
    js, md = write_results(stem, res, markdown(res), Path(args.out))
    print(md.read_text())


if __name__ == "__main__":
    main()
