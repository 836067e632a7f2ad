"""What the in-jit value check costs: `radon` with a traced geometry, with and without `eqx.error_if`.

    python benchmarks/error_checks.py            # 256 and 512 px, 2 CPU cores: about a minute

With the geometry as a jit argument (as `benchmarks/projector.py` times it), `radon` checks the traced
detector spacing with `equinox.error_if` (docs/errors.md). This times that call against the same call
with the check replaced by the identity, alternating the two so that drift falls on both, and against
a geometry closed over as a constant (no check traced at all). Writes results/error_checks.{json,md}.
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import machine, markdown_table, median_seconds, write_results
from jaxrecon.operators import ParallelBeamGeometry, radon


def _without_error_if(fn):
    """`fn` traced with `eqx.error_if` replaced by the identity (restored afterwards)."""
    def traced(*args):
        original = eqx.error_if
        eqx.error_if = lambda x, pred, msg: x
        try:
            return jax.jit(fn).lower(*args).compile()
        finally:
            eqx.error_if = original

    return traced


def measure(n: int, rounds: int, repeats: int) -> dict:
    geom = ParallelBeamGeometry.uniform((n, n), n)
    x = jnp.asarray(np.random.default_rng(0).random((n, n)), jnp.float32)
    checked = jax.jit(radon).lower(x, geom).compile()
    unchecked = _without_error_if(radon)(x, geom)
    closed = jax.jit(lambda x: radon(x, geom)).lower(x).compile()
    times = {"checked": [], "unchecked": [], "closed_over": []}
    for _ in range(rounds):  # alternate, so that load changes fall on all three
        times["checked"].append(median_seconds(checked, x, geom, repeats=repeats)[0])
        times["unchecked"].append(median_seconds(unchecked, x, geom, repeats=repeats)[0])
        times["closed_over"].append(median_seconds(closed, x, repeats=repeats)[0])
    med = {k: float(np.median(v)) for k, v in times.items()}
    return dict(size=n, views=n, seconds=med, rounds=times, ratio_checked_unchecked=med["checked"] / med["unchecked"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rows = [measure(int(n), args.rounds, args.repeats) for n in args.sizes.split(",")]
    meta = machine()
    lines = [
        "# The cost of the in-jit value check (`eqx.error_if`) in `radon`",
        "",
        f"`python benchmarks/error_checks.py` on {meta['device']} ({meta['cpu_count']} cores), jax {meta['jax']}, "
        f"{meta['date']}, load average {meta['load_average'][0]:.2f}. Forward projection, float32, N x N image, "
        f"N views; median of {args.rounds} rounds of a median of {args.repeats} calls, the variants alternated.",
        "",
        *markdown_table(
            ["N", "geometry traced, with the check (ms)", "traced, check removed (ms)", "ratio",
             "geometry closed over (ms)"],
            [[r["size"], f"{1e3 * r['seconds']['checked']:.2f}", f"{1e3 * r['seconds']['unchecked']:.2f}",
              f"{r['ratio_checked_unchecked']:.3f}", f"{1e3 * r['seconds']['closed_over']:.2f}"] for r in rows]),
    ]
    js, md = write_results("error_checks", dict(meta=meta, rows=rows), "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
