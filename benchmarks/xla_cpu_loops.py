"""Why the unrolled schemes unroll and the DEQ's convolutions are channels-last with a custom VJP.

Times ten 3x3 convolutions (32 -> 32 channels, 64 x 64 images, float32) applied one after another,
written three ways, each as a `lax.scan` that XLA keeps as a while loop (`unroll=1`) and fully
unrolled (`unroll=True`), forward and forward + gradient with respect to the input:

- `NCHW`: `jax.lax.conv_general_dilated` with channels first (what `eqx.nn.Conv2d` emits);
- `NHWC`: channels last with an HWIO kernel, JAX's own gradient (its input-gradient is a
  convolution with an HWOI kernel);
- `SpectralConv2d`: `jaxrecon.deq.SpectralConv2d` (channels last, custom VJP whose input-gradient
  is the flipped, channel-swapped HWIO correlation).

Medians of `--repeats` runs after a warm-up; compile time apart. The ratio "loop / unrolled" is the
slowdown the while loop costs.

    python benchmarks/xla_cpu_loops.py          # < 2 minutes on 2 CPU cores

Writes xla_cpu_loops.json and .md into --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import RESULTS, environment, markdown_table, median_seconds, write_results
from jaxrecon.deq import SpectralConv2d


def layer_fns(channels, key):
    w = jax.random.normal(key, (channels, channels, 3, 3), jnp.float32) / (3 * channels**0.5)
    conv = SpectralConv2d(channels, channels, 3, bound=1e6, key=key)  # the bound is never active
    conv = eqx.tree_at(lambda c: c.weight, conv, w).normalised((8, 8))  # the same weight as the others

    def nchw(x):  # x (C, H, W)
        return jax.lax.conv_general_dilated(x[None], w, (1, 1), "SAME")[0]

    def nhwc(x):
        y = jax.lax.conv_general_dilated(jnp.moveaxis(x, 0, -1)[None], jnp.transpose(w, (2, 3, 1, 0)), (1, 1),
                                         "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
        return jnp.moveaxis(y, -1, 0)

    def spectral(x):
        return conv(x) - conv.bias[:, None, None]

    return {"NCHW": nchw, "NHWC": nhwc, "SpectralConv2d": spectral}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    x = jax.random.normal(jax.random.key(1), (args.channels, args.size, args.size), jnp.float32)
    rows = []
    for name, layer in layer_fns(args.channels, jax.random.key(0)).items():
        for unroll in (1, True):
            def forward(x, layer=layer, unroll=unroll):
                return jax.lax.scan(lambda z, _: (jnp.tanh(layer(z)), None), x, None, length=args.layers,
                                    unroll=unroll)[0]

            fwd = jax.jit(forward)
            grad = jax.jit(jax.grad(lambda x, forward=forward: jnp.sum(forward(x) ** 2)))
            t_f, c_f = median_seconds(fwd, x, repeats=args.repeats)
            t_g, c_g = median_seconds(grad, x, repeats=args.repeats)
            rows.append(dict(layer=name, loop="unrolled" if unroll is True else "while loop", forward_seconds=t_f,
                             gradient_seconds=t_g, compile_forward_seconds=c_f, compile_gradient_seconds=c_g))
            print(f"{name:15s} {rows[-1]['loop']:10s} forward {t_f * 1e3:8.1f} ms, forward+gradient "
                  f"{t_g * 1e3:8.1f} ms", flush=True)
    ref = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(layer_fns(args.channels, jax.random.key(0))["NHWC"](x) ** 2)))(x))
    got = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(layer_fns(args.channels, jax.random.key(0))["SpectralConv2d"](x) ** 2)))(x))
    meta = dict(args=vars(args), **environment("jax", "device_kind", "cpu_count", "platform", "date"),
                gradient_relative_difference=float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
    out = Path(args.out)
    by = {(r["layer"], r["loop"]): r for r in rows}
    lines = [
        "# Convolutions inside XLA CPU while loops",
        "",
        f"`python benchmarks/xla_cpu_loops.py` on {meta['device_kind']} ({meta['cpu_count']} CPU cores visible), "
        f"jax {meta['jax']}, {meta['date']}. {args.layers} 3x3 convolutions ({args.channels} -> {args.channels} "
        f"channels, tanh between) on {args.size} x {args.size} float32 images in a `lax.scan`, as a while loop "
        f"(`unroll=1`) or unrolled; median of {args.repeats} runs after a warm-up. SpectralConv2d's input-gradient "
        f"vs JAX's NHWC one: relative difference {meta['gradient_relative_difference']:.1e}.",
        "",
    ]
    table = []
    for name in ("NCHW", "NHWC", "SpectralConv2d"):
        a, b = by[(name, "while loop")], by[(name, "unrolled")]
        table.append([name, f"{1e3 * a['forward_seconds']:.1f}", f"{1e3 * b['forward_seconds']:.1f}",
                      f"{a['forward_seconds'] / b['forward_seconds']:.1f}x", f"{1e3 * a['gradient_seconds']:.1f}",
                      f"{1e3 * b['gradient_seconds']:.1f}", f"{a['gradient_seconds'] / b['gradient_seconds']:.1f}x"])
    lines += markdown_table(["layer", "forward, loop (ms)", "forward, unrolled (ms)", "loop / unrolled",
                             "fwd+grad, loop (ms)", "fwd+grad, unrolled (ms)", "loop / unrolled"], table)
    write_results("xla_cpu_loops", dict(meta=meta, rows=rows), "\n".join(lines), out)
    print(f"wrote {out / 'xla_cpu_loops.json'} and .md")


if __name__ == "__main__":
    main()
