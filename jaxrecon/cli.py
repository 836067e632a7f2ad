r"""The `jaxrecon` command line.

Usage::

    jaxrecon demo [--size 128] [--views 30] [--noise 0.05] [--seed 0] [--filter hann] [--output demo_output]
    python -m jaxrecon demo ...

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares its options and sets
`func=_run_<name>`; `_run_<name>(args) -> int` does the work and returns the exit status. To add
a subcommand (e.g. `train`, `evaluate`), write the pair and list the adder in `_SUBCOMMANDS`.
JAX and matplotlib are imported inside the runners, so `jaxrecon --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["DemoData", "build_parser", "main", "run_demo", "simulate_and_reconstruct"]

# The FBP filters (mirrors jaxrecon.operators.fbp.FBP_FILTERS; kept literal so --help needs no JAX import,
# and checked against it in tests/test_cli.py).
_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


# --------------------------------------------------------------------------------------------------
# Option types: argparse turns an ArgumentTypeError into "argument --size: <message>" and exit 2.
# --------------------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# --------------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------------


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="simulate a noisy Shepp-Logan sinogram, reconstruct it by FBP, report PSNR/SSIM and save a figure",
        description=(
            "Simulate a parallel-beam sinogram of the modified Shepp-Logan phantom from its exact "
            "(analytic) line integrals, i.e. without the inverse crime, add relative Gaussian noise, "
            "reconstruct by filtered back projection and compare with the phantom. Writes "
            "<output>/demo.png (phantom | sinogram | reconstruction) and <output>/demo.json (metrics)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--size", type=_int_at_least(16), default=128, help="image side length N (N x N pixels)")
    p.add_argument("--views", type=_int_at_least(1), default=30, help="number of projection angles in [0, pi)")
    p.add_argument(
        "--noise", type=_non_negative_float, default=0.05,
        help="relative Gaussian noise level: sigma = noise * mean|sinogram|",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the noise")
    p.add_argument("--filter", choices=_FILTERS, default="hann", help="FBP filter")
    p.add_argument("--output", type=Path, default=Path("demo_output"), help="directory for demo.png and demo.json")
    p.set_defaults(func=_run_demo, parser=p)


class DemoData(NamedTuple):
    """Arrays and timings of one demo run (see `simulate_and_reconstruct`)."""

    phantom: Any  # (N, N) reference image, shepp_logan(N)
    sinogram: Any  # (views, detectors) noisy exact sinogram
    reconstruction: Any  # (N, N) FBP
    geom: Any  # the ParallelBeamGeometry
    timings_s: dict  # compile, simulate, fbp (seconds)


def simulate_and_reconstruct(
    size: int = 128, views: int = 30, noise: float = 0.05, seed: int = 0, filter: str = "hann"
) -> DemoData:
    """The demo pipeline: exact Shepp-Logan sinogram + relative Gaussian noise, then FBP.

    The sinogram is `gaussian_noise(key, ellipse_sinogram(shepp_logan_ellipses(), geom), noise)`:
    exact line integrals of the continuous phantom, so no inverse crime. The reference image is
    `shepp_logan(size)`; everything is float32. Simulation and FBP are compiled ahead of time, so
    the compile time and the run times are measured separately.
    """
    import jax
    import jax.numpy as jnp

    from jaxrecon.operators import ParallelBeamGeometry, fbp, gaussian_noise
    from jaxrecon.phantoms import ellipse_sinogram, shepp_logan, shepp_logan_ellipses

    dtype = jnp.float32
    geom = ParallelBeamGeometry.uniform((size, size), num_angles=views, dtype=dtype)
    ellipses = shepp_logan_ellipses(dtype)
    phantom = shepp_logan(size, dtype=dtype)
    key = jax.random.key(seed)
    level = jnp.asarray(noise, dtype)

    def simulate(ellipses, geom, key, level):
        return gaussian_noise(key, ellipse_sinogram(ellipses, geom), level)

    def reconstruct(sinogram, geom):
        return fbp(sinogram, geom, filter=filter)

    # Ahead-of-time compilation: trace + lower + compile is "compile", the call is "run".
    t0 = time.perf_counter()
    simulate_c = jax.jit(simulate).lower(ellipses, geom, key, level).compile()
    sino_spec = jax.ShapeDtypeStruct(geom.sinogram_shape, dtype)
    reconstruct_c = jax.jit(reconstruct).lower(sino_spec, geom).compile()
    t_compile = time.perf_counter() - t0

    t0 = time.perf_counter()
    sinogram = jax.block_until_ready(simulate_c(ellipses, geom, key, level))
    t_simulate = time.perf_counter() - t0
    t0 = time.perf_counter()
    recon = jax.block_until_ready(reconstruct_c(sinogram, geom))
    t_fbp = time.perf_counter() - t0
    timings = {"compile": t_compile, "simulate": t_simulate, "fbp": t_fbp}
    return DemoData(jax.block_until_ready(phantom), sinogram, recon, geom, timings)


def run_demo(
    size: int = 128,
    views: int = 30,
    noise: float = 0.05,
    seed: int = 0,
    filter: str = "hann",
    output: str | Path | None = "demo_output",
    log: Callable[[str], None] = print,
) -> dict:
    """Run `simulate_and_reconstruct`, report PSNR/SSIM, write the figure and JSON; return the metrics.

    Writes `<output>/demo.png` (phantom | sinogram | reconstruction) and `<output>/demo.json` (the
    returned dict); with `output=None` nothing is written. `log` receives the report lines.
    """
    import jax

    from jaxrecon.metrics import psnr, relative_error, ssim

    t_start = time.perf_counter()
    data = simulate_and_reconstruct(size, views, noise, seed, filter)
    phantom, recon, geom = data.phantom, data.reconstruction, data.geom
    metrics = {
        "psnr": float(psnr(recon, phantom, data_range=1.0)),
        "ssim": float(ssim(recon, phantom, data_range=1.0)),
        "relative_error": float(relative_error(recon, phantom)),
    }
    t = data.timings_s
    result = {
        "size": size,
        "views": views,
        "num_detectors": geom.num_detectors,
        "noise": noise,
        "seed": seed,
        "filter": filter,
        **metrics,
        "timings_s": {**t, "total": time.perf_counter() - t_start},
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
    }

    log(
        f"Shepp-Logan {size}x{size}, {views} view{'s' if views != 1 else ''} x {geom.num_detectors} detectors, "
        f"{100 * noise:g}% Gaussian noise (seed {seed}), exact analytic sinogram"
    )
    log(
        f"FBP ({filter}): PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, "
        f"relative error {metrics['relative_error']:.4f}"
    )
    log(
        f"time: compile {t['compile']:.2f} s; run: simulate {1e3 * t['simulate']:.1f} ms, "
        f"FBP {1e3 * t['fbp']:.1f} ms; total {result['timings_s']['total']:.2f} s on {result['device']}"
    )

    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        png, js = out / "demo.png", out / "demo.json"
        _demo_figure(phantom, data.sinogram, recon, geom, result, png)
        js.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {png} and {js}")
    return result


def _demo_figure(phantom, sinogram, recon, geom, result: dict, path: Path) -> None:
    """phantom | sinogram | reconstruction, rendered with the Agg canvas (no display, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    phantom, sinogram, recon = (np.asarray(a) for a in (phantom, sinogram, recon))
    angles = np.rad2deg(np.asarray(geom.angles))
    s = np.asarray(geom.detector_positions())
    n = result["size"]

    fig = Figure(figsize=(13.5, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 3)
    im = ax[0].imshow(phantom, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax[0].set_title(f"Modified Shepp-Logan, {n}x{n}")
    fig.colorbar(im, ax=ax[0], shrink=0.8)
    # Rows are angles (the stored (angles, detectors) layout), from 0 at the top.
    dtheta = angles[1] - angles[0] if len(angles) > 1 else 180.0
    extent = (s[0] - 0.5, s[-1] + 0.5, angles[-1] + dtheta / 2, angles[0] - dtheta / 2)
    im = ax[1].imshow(sinogram, cmap="gray", aspect="auto", extent=extent, interpolation="nearest")
    ax[1].set_title(f"Sinogram: {result['views']} views, {100 * result['noise']:g}% noise")
    ax[1].set_xlabel("detector position s (pixels)")
    ax[1].set_ylabel("angle θ (degrees)")
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    im = ax[2].imshow(recon, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax[2].set_title(f"FBP ({result['filter']}): PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    for a in (ax[0], ax[2]):
        a.set_xticks([])
        a.set_yticks([])
    fig.savefig(path, dpi=100)


def _run_demo(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.output.is_dir():
        raise _UsageError(f"argument --output: {str(args.output)!r} exists and is not a directory")
    run_demo(args.size, args.views, args.noise, args.seed, args.filter, args.output)
    return 0


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad option found after parsing; reported like argparse's own errors (exit status 2)."""


_SUBCOMMANDS = (_add_demo,)  # add _add_train, _add_evaluate, ... here


def build_parser() -> argparse.ArgumentParser:
    from jaxrecon._version import __version__

    parser = argparse.ArgumentParser(
        prog="jaxrecon",
        description="Classical and learned reconstruction for inverse problems in imaging (CT), in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`) and run the subcommand; returns the exit status.

    Bad options exit through argparse (`SystemExit(2)` with a message on stderr).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `jaxrecon demo | head -1`: stop quietly, as Unix tools do
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python would fail again flushing stdout at exit
        return 1
    except _UsageError as e:
        args.parser.error(str(e))  # the subcommand's usage + message on stderr, SystemExit(2)
        raise  # pragma: no cover  (error() does not return)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
