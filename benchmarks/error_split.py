"""Where a trained reconstruction's error lies: in what the views see (range of A^T) or in the null space of A.

For each run given as LABEL=DIR (a `jaxrecon train` checkpoint of the same preset), on the preset's 16 test
ellipses, the error e = x_hat - x is split by an SVD of the explicit matrix of A (float64) into its part in
the range of A^T and its part in the null space of A, and the range part further into the directions A sees
weakly (singular values below 10% of the largest). Each part is reported as a mean squared error per pixel
(the parts add up to the MSE). Supervised training and training without truths (SURE, equivariant imaging,
Noise2Inverse) can then be compared on what they fail to learn: a measurement-domain loss such as SURE
sees the range only, weighted by the squared singular values.

    python benchmarks/error_split.py --model "LPD, supervised=runs/lpd_sup_800" --model "LPD, SURE=runs/lpd_sure_800"

Presets up to 64 x 64 (the explicit matrix and its SVD). Writes <out>/error_split_<preset>.json and .md.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from harness import RESULTS, command, fmt, machine, markdown_table, write_results
from jaxrecon.metrics import psnr
from jaxrecon.train import batch_keys
from jaxrecon.train.evaluate import reconstruct
from jaxrecon.train.experiment import load_trained

WEAK = 0.1  # singular values below WEAK * the largest: directions the views see weakly
MAX_PIXELS = 64 * 64


def explicit_svd(op):
    """`(singular values, right singular vectors as columns)` of A's matrix, for the rank numerically > 0."""
    n = int(np.prod(op.in_shape))
    basis = jnp.eye(n, dtype=jnp.float32).reshape((n,) + tuple(op.in_shape))
    a = np.asarray(jax.lax.map(op, basis, batch_size=256)).reshape(n, -1).T.astype(np.float64)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-6))
    return s[:rank], vt[:rank].T, a.shape


def split(errors, s, v):
    """Mean over samples of the per-pixel squared error: total, range part, null part, weakly-seen range part."""
    n = errors.shape[1]
    coeff = errors @ v  # coordinates in the range of A^T
    total = np.sum(errors**2, 1)
    in_range = np.sum(coeff**2, 1)
    weak = np.sum(coeff[:, s < WEAK * s[0]] ** 2, 1)
    parts = {"mse": total, "range": in_range, "null": total - in_range, "weak_range": weak}
    return {k: float(np.mean(val) / n) for k, val in parts.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=DIR",
                    help="a trained run (repeatable); the first is the reference of the 'excess' columns")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    runs = []
    for item in args.model:
        label, eq, path = item.partition("=")
        if not eq or not label.strip() or not path.strip():
            ap.error(f"--model expects LABEL=DIR, got {item!r}")
        runs.append((label.strip(), path.strip()))
    start = time.perf_counter()
    _, data, config = load_trained(runs[0][1])
    preset, op = config["preset"], data.operator
    if int(np.prod(op.in_shape)) > MAX_PIXELS:
        ap.error(f"the explicit SVD needs images of at most {MAX_PIXELS} pixels; preset {preset!r} has {op.in_shape}")
    test = jax.jit(jax.vmap(data.sample))(batch_keys(config["seed"], "test", 0, 16))
    s, v, shape = explicit_svd(op)
    truths = np.asarray(test.x, np.float64).reshape(16, -1)
    rows = []
    for label, path in runs:
        model, other, cfg = load_trained(path)
        if cfg["preset"] != preset or other.operator.out_shape != op.out_shape:
            ap.error(f"{path!r} is a {cfg['preset']!r} run; every run must share the first run's preset {preset!r}")
        xs = reconstruct(model, op, test.y, batch_size=4)
        parts = split(np.asarray(xs, np.float64).reshape(16, -1) - truths, s, v)
        t = cfg["train"]
        rows.append(dict(label=label, run=path, loss=t.get("loss", "supervised"), steps=t["steps"],
                         psnr=float(jnp.mean(jax.vmap(psnr)(xs, test.x))), **parts))
        print(f"{label}: MSE {parts['mse']:.3e}, range {parts['range']:.3e}, null {parts['null']:.3e}", flush=True)
    ref = rows[0]
    data_out = dict(preset=preset, matrix_shape=list(shape), rank=len(s), null_dimension=shape[1] - len(s),
                    weak_directions=int(np.sum(s < WEAK * s[0])), weak_threshold=WEAK, rows=rows,
                    meta=dict(command=command(__file__, argv), machine=machine(),
                              wall_minutes=(time.perf_counter() - start) / 60))
    header = ["method", "loss", "test PSNR (dB)", "MSE", "range of A^T", "null space of A",
              f"of the range: singular value < {WEAK:g} max", "excess MSE over the first row: range / null"]
    table = [[r["label"], r["loss"], fmt(r["psnr"]), f"{r['mse']:.2e}",
              f"{r['range']:.2e} ({100 * r['range'] / r['mse']:.0f}%)", f"{r['null']:.2e} ({100 * r['null'] / r['mse']:.0f}%)",
              f"{r['weak_range']:.2e}",
              "-" if r is ref else f"{r['range'] - ref['range']:+.2e} / {r['null'] - ref['null']:+.2e}"] for r in rows]
    md = [f"# Where the test error lies: range of A^T or null space of A (preset `{preset}`)", "",
          f"`{data_out['meta']['command']}`, {data_out['meta']['machine'].get('date', '')}, "
          f"{data_out['meta']['wall_minutes']:.1f} min.", "",
          f"A as an explicit {shape[0]} x {shape[1]} matrix (float64): rank {len(s)} (singular values above 1e-6 of "
          f"the largest), null space of dimension {shape[1] - len(s)}; {data_out['weak_directions']} of the range's "
          f"directions have singular values below {WEAK:g} of the largest. Errors: mean squared error per pixel on the "
          "16 test ellipses, split exactly (range part + null part = MSE).", ""]
    md += markdown_table(header, table)
    write_results(f"error_split_{preset}", data_out, "\n".join(md) + "\n", args.out)
    print("\n".join(md))


if __name__ == "__main__":
    main()
