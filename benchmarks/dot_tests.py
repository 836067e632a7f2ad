"""Dot tests of every projector pair, float32 and float64, at sizes up to 1024 (2D) and 64^3-128^3 (3D).

For random normal x and y (three seeds) the adjoint mismatch of `project` / `backproject`,

    e = |<Ax, y> - <x, A^T y>|,   relative to |<Ax, y>|, to its typical size ||Ax|| ||y|| / sqrt(m),
                                  and to ||Ax|| ||y||,

with both inner products summed in float64 from the operator's outputs (so the measurement itself adds
no float32 rounding) and m the number of measurements. For random y, <Ax, y> is a sum of m terms of
random sign, of typical size ||Ax|| ||y|| / sqrt(m); the first form divides by the draw itself, which is
sometimes much smaller than typical (then a float32 pair that is exact to rounding looks inexact), so
the bars are checked on the typical size and the first form is reported beside it. Geometries: 2D parallel (`radon`), fan beam with flat and curved detectors and the
fan vector form (N x N, N views over 2 pi for fan); 3D circular and helical cone beam, 3D parallel (slice
stack) and its vector form (n^3, n views). Bars of issue 14: float64 <= 1e-12, float32 <= 1e-5 at
every size.

    python benchmarks/dot_tests.py                        # the sizes of the issue
    python benchmarks/dot_tests.py --sizes 32 --sizes3d 8 --out /tmp/dot   # a check that it runs
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np

from harness import RESULTS, command, machine, markdown_table, verdict, write_results

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

from jaxrecon.operators import (  # noqa: E402
    ConeBeamGeometry,
    FanBeamGeometry,
    HelicalConeBeamGeometry,
    Parallel3DGeometry,
    ParallelBeamGeometry,
    backproject,
    project,
)

BARS = {"float64": 1e-12, "float32": 1e-5}
SEEDS = 3


def geometries_2d(n, dtype):
    r, d = 2.0 * n, 1.0 * n  # source and detector distances from the centre (pixels)
    flat = FanBeamGeometry.uniform((n, n), n, r, d, dtype=dtype)
    return {
        "parallel": ParallelBeamGeometry.uniform((n, n), n, dtype=dtype),
        "fan, flat": flat,
        "fan, curved": FanBeamGeometry.uniform((n, n), n, r, d, detector="curved", dtype=dtype),
        "fan, vector": flat.to_vec(),
    }


def geometries_3d(n, dtype):
    det = (int(1.6 * n), int(1.6 * n))
    parallel = Parallel3DGeometry.uniform((n, n, n), n, dtype=dtype)
    return {
        "cone": ConeBeamGeometry.uniform((n, n, n), n, det, 3.0 * n, 1.5 * n, dtype=dtype),
        "helical cone": HelicalConeBeamGeometry.uniform((n, n, n), n, det, 3.0 * n, 1.5 * n, pitch=0.5 * n,
                                                        dtype=dtype),
        "3D parallel": parallel,
        "3D parallel, vector": parallel.to_vec(),
    }


def mismatch(geom, dtype, seed):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, geom.shape, dtype)
    ax = jax.jit(project)(x, geom)
    y = jax.random.normal(ky, ax.shape, dtype)
    aty = jax.jit(backproject)(y, geom)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    lhs, rhs = np.vdot(f64(ax), f64(y)), np.vdot(f64(x), f64(aty))
    norms = np.linalg.norm(f64(ax)) * np.linalg.norm(f64(y))
    e = abs(lhs - rhs)
    return e / abs(lhs), e * np.sqrt(ax.size) / norms, e / norms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024], help="2D image sizes N")
    ap.add_argument("--sizes3d", type=int, nargs="+", default=[32, 64], help="3D volume sizes n")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rows = []
    cases = [(n, geometries_2d) for n in args.sizes] + [(n, geometries_3d) for n in args.sizes3d]
    for n, make in cases:
        for dtype in (jnp.float32, jnp.float64):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # detectors that clip the volume's corners
                geoms = make(n, dtype)
            for name, geom in geoms.items():
                t0 = time.perf_counter()
                errors = np.array([mismatch(geom, dtype, seed) for seed in range(SEEDS)])
                dt = jnp.dtype(dtype).name
                worst = errors.max(axis=0)
                rows.append(dict(geometry=name, size=n, dtype=dt, inner=float(worst[0]), typical=float(worst[1]),
                                 norms=float(worst[2]), passed=bool(worst[1] <= BARS[dt]),
                                 seconds=time.perf_counter() - t0))
                print(f"  {name:20s} {n:5d} {dt}: {worst[0]:.1e} (of |<Ax,y>|), {worst[1]:.1e} (of its typical "
                      f"size), {worst[2]:.1e} (of norms)", flush=True)
    worst = {d: max((r for r in rows if r["dtype"] == d), key=lambda r: r["typical"]) for d in BARS}
    check = dict(claim="every pair within the bars (float64 <= 1e-12, float32 <= 1e-5, relative to the typical "
                       "size of <Ax, y>)",
                 passed=all(r["passed"] for r in rows),
                 detail="; ".join(f"worst {d}: {r['typical']:.1e} ({r['geometry']}, {r['size']}; "
                                  f"{r['inner']:.1e} relative to that draw's |<Ax, y>|)" for d, r in worst.items()))
    meta = dict(command=command(__file__, argv), seeds=SEEDS, bars=BARS, total_seconds=time.perf_counter() - start,
                **machine())
    write_results("dot_tests", dict(meta=meta, rows=rows, check=check), markdown(meta, rows, check), args.out)
    print(verdict(check))


def markdown(meta, rows, check):
    lines = [
        "# Dot tests of every projector pair",
        "",
        f"`{meta['command']}` on {meta['device']} ({meta['cpu_count']} cores), jax {meta['jax']}, {meta['date']}; "
        f"{meta['total_seconds'] / 60:.1f} min.",
        "",
        f"Random normal x and y, {meta['seeds']} seeds, the worst shown; inner products summed in float64; "
        "e = abs(⟨Ax, y⟩ - ⟨x, Aᵀy⟩), m measurements: ‖Ax‖ ‖y‖ / √m is the typical size of ⟨Ax, y⟩ for random "
        "y (the bars apply to it; dividing by the draw abs(⟨Ax, y⟩) itself is shown beside it). "
        "2D: N x N image, N views (fan: over 2 pi, source at 2N, detector at N). 3D: n^3 volume, n views "
        "(cone: source at 3n, detector at 1.5n, (1.6 n)^2 detector; helical pitch n/2).",
        "",
    ]
    table = [[r["geometry"], r["size"], r["dtype"], f"{r['typical']:.1e}", f"{r['inner']:.1e}", f"{r['norms']:.1e}",
              "yes" if r["passed"] else "NO"] for r in rows]
    lines += markdown_table(["geometry", "size", "dtype", "e √m / (‖Ax‖ ‖y‖)", "e / abs(⟨Ax, y⟩)",
                             "e / (‖Ax‖ ‖y‖)", "within bar"], table)
    return "\n".join(lines + ["", verdict(check)]) + "\n"


if __name__ == "__main__":
    main()
