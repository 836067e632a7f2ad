"""Cone-beam projector: time and XLA scratch memory of `project`, its adjoint `backproject` and `fdk`.

For an n^3 volume, `views` views on a full circle and a (1.6 n)^2 detector (source at 3n, detector at
1.5n), float32: the median of `--repeats` jitted calls after a warm-up, and XLA's buffer assignment
(`jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes`) for each `batch_size`.
The adjoint is `jax.linear_transpose` of the forward (scatter-adds on CPU); `fdk` (ram-lak filter) backprojects
with its own voxel-driven gathers.

    PYTHONPATH=. python benchmarks/cone_beam.py --n 32 --views 32 128 --batch-sizes 8 32
"""

from __future__ import annotations

import argparse
import warnings

import jax
import jax.numpy as jnp

from harness import median_seconds
from jaxrecon.operators import ConeBeamGeometry, backproject, fdk, project


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--views", type=int, nargs="+", default=[32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.n
    det = (int(1.6 * n), int(1.6 * n))
    print(f"device: {jax.devices()[0].device_kind}; volume {n}^3, detector {det}, float32")
    for views in args.views:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the corners of the box may fall just off the detector
            g = ConeBeamGeometry.uniform((n, n, n), views, det, 3.0 * n, 1.5 * n, dtype=jnp.float32)
        x, y = jnp.ones(g.shape, jnp.float32), jnp.ones(g.sinogram_shape, jnp.float32)
        for bs in args.batch_sizes:
            fwd = jax.jit(lambda x, bs=bs, g=g: project(x, g, batch_size=bs))
            adj = jax.jit(lambda y, bs=bs, g=g: backproject(y, g, batch_size=bs))
            mem_f = fwd.lower(x).compile().memory_analysis().temp_size_in_bytes
            mem_a = adj.lower(y).compile().memory_analysis().temp_size_in_bytes
            rec = jax.jit(lambda y, bs=bs, g=g: fdk(y, g, batch_size=bs))
            mem_r = rec.lower(y).compile().memory_analysis().temp_size_in_bytes
            tf, ta = median_seconds(fwd, x, repeats=args.repeats)[0], median_seconds(adj, y, repeats=args.repeats)[0]
            tr = median_seconds(rec, y, repeats=args.repeats)[0]
            print(f"views {views:4d} batch_size {bs:3d}: project {tf:.3f} s ({mem_f / 2**20:.1f} MiB scratch), "
                  f"backproject {ta:.3f} s ({mem_a / 2**20:.1f} MiB scratch), ratio {ta / tf:.1f}; "
                  f"fdk {tr:.3f} s ({mem_r / 2**20:.1f} MiB scratch)")


if __name__ == "__main__":
    main()
