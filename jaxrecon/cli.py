r"""The `jaxrecon` command line.

Usage::

    jaxrecon demo [--size 64] [--views 30] [--noise 0.05] [--seed 0] [--filter hann] [--methods fbp,tv,lpd]
                  [--tv-alpha A] [--output demo_output]
    jaxrecon train --model lpd --preset quick [--data lodopab:FOLDER] [--output runs/lpd] [--steps N] [--seed 0]
                   [--loss supervised|noise2inverse|ei|sure] [--loss-option KEY=VALUE ...]
    jaxrecon train --model dncnn --preset quick [--output runs/dncnn_quick] [--steps N]
    jaxrecon train ... [--distributed] [--coordinator-address HOST:PORT --num-processes P --process-id I]
    jaxrecon evaluate CHECKPOINT [--data lodopab:FOLDER] [--samples 16] [--json FILE]
    jaxrecon reconstruct SCAN.h5 [--method fbp|tv|cgls|lpd] [--output rec.h5] [--centre auto] [--rings]
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

_METHODS = ("fbp", "tv", "lpd")
# TV weight of the demo at 64 x 64: the value the quick comparison selected on validation ellipses
# (benchmarks/results/comparison_quick.md); scaled by size/64 for other sizes (the data term grows
# with the length of the rays).
_TV_ALPHA_64 = 1.26
_TV_ITERATIONS = 500
_MODELS = ("unet", "pgd", "lista", "lgd", "lpd", "degrad", "deprox")  # mirrors jaxrecon.train.experiment.MODELS (checked in tests)
_DENOISERS = ("dncnn",)  # mirrors jaxrecon.train.denoiser.DENOISERS
_LOSSES = ("supervised", "noise2inverse", "ei", "sure")  # mirrors jaxrecon.train.experiment.LOSSES
_PRESETS = ("quick", "quick15", "standard", "paper", "lodopab")

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


def _data_option(text: str) -> tuple[str, Path | None]:
    """`ellipses` -> ("ellipses", None); `lodopab:FOLDER` -> ("lodopab", FOLDER)."""
    if text == "ellipses":
        return "ellipses", None
    source, colon, folder = text.partition(":")
    if source == "lodopab" and colon:
        if not folder:
            raise argparse.ArgumentTypeError("lodopab needs the folder of the unzipped files: lodopab:FOLDER")
        return "lodopab", Path(folder)
    raise argparse.ArgumentTypeError(f"expected 'ellipses' or 'lodopab:FOLDER', got {text!r}")


def _loss_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` -> (KEY, VALUE as JSON: 3, 0.5, null, ...; else the string)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_splits=3), got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def _address(text: str) -> str:
    """`HOST:PORT` (the coordinator of `jax.distributed`)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 10.0.0.1:1234), got {text!r}")
    return text


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
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
    p.add_argument("--size", type=_int_at_least(16), default=64, help="image side length N (N x N pixels)")
    p.add_argument("--views", type=_int_at_least(1), default=30, help="number of projection angles in [0, pi)")
    p.add_argument(
        "--noise", type=_non_negative_float, default=0.05,
        help="relative Gaussian noise level: sigma = noise * mean|sinogram|",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the noise")
    p.add_argument("--filter", choices=_FILTERS, default="hann", help="FBP filter")
    p.add_argument(
        "--methods", type=_method_list, default=_METHODS,
        help="comma-separated methods: fbp (always run), tv (PDHG), lpd (the shipped learned primal-dual, "
        "trained for 64x64, 30 views, 5%% noise; skipped with a note for other settings)",
    )
    p.add_argument(
        "--tv-alpha", type=_non_negative_float, default=None,
        help=f"TV weight (default {_TV_ALPHA_64} * size/64, chosen on validation ellipses at 64x64)",
    )
    p.add_argument("--output", type=Path, default=Path("demo_output"), help="directory for demo.png and demo.json")
    p.set_defaults(func=_run_demo, parser=p)


def _method_list(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in _METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(_METHODS)}, got {text!r}")
    return names


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
    `shepp_logan(size, supersample=4)` (4x4 pixel averages, the image those line integrals belong to, as
    in the benchmarks); everything is float32. Simulation and FBP are compiled ahead of time, so
    the compile time and the run times are measured separately.
    """
    import jax
    import jax.numpy as jnp

    from jaxrecon.operators import ParallelBeamGeometry, fbp, gaussian_noise
    from jaxrecon.phantoms import ellipse_sinogram, shepp_logan, shepp_logan_ellipses

    dtype = jnp.float32
    geom = ParallelBeamGeometry.uniform((size, size), num_angles=views, dtype=dtype)
    ellipses = shepp_logan_ellipses(dtype)
    phantom = shepp_logan(size, supersample=4, dtype=dtype)  # pixel averages: what exact line integrals see
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
    size: int = 64,
    views: int = 30,
    noise: float = 0.05,
    seed: int = 0,
    filter: str = "hann",
    output: str | Path | None = "demo_output",
    log: Callable[[str], None] = print,
    methods: Sequence[str] = _METHODS,
    tv_alpha: float | None = None,
) -> dict:
    """Run `simulate_and_reconstruct` (FBP), then TV and the shipped learned primal-dual if asked;
    report PSNR/SSIM, write the figure and JSON; return the metrics.

    Writes `<output>/demo.png` (phantom | sinogram | reconstructions) and `<output>/demo.json` (the
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

    extra = _other_methods(data, methods, noise, tv_alpha, log)
    result["methods"] = {name: {k: v for k, v in m.items() if k != "image"} for name, m in extra.items()}
    result["timings_s"]["total"] = time.perf_counter() - t_start

    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        png, js = out / "demo.png", out / "demo.json"
        _demo_figure(phantom, data.sinogram, recon, geom, result, png, extra)
        js.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {png} and {js}")
    return result


def _other_methods(data: DemoData, methods, noise: float, tv_alpha, log) -> dict:
    """TV and the shipped learned primal-dual on the demo's data: {name: {psnr, ssim, seconds, image, ...}}."""
    import jax

    from jaxrecon.metrics import psnr, ssim
    from jaxrecon.operators import RadonTransform

    op = RadonTransform(data.geom)
    size, views = data.geom.shape[0], data.geom.angles.shape[0]
    out = {}

    def report(name, label, fn, **info):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(data.sinogram).compile()
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        image = jax.block_until_ready(compiled(data.sinogram))
        seconds = time.perf_counter() - t0
        p, q = float(psnr(image, data.phantom, data_range=1.0)), float(ssim(image, data.phantom, data_range=1.0))
        out[name] = dict(psnr=p, ssim=q, seconds=seconds, compile_seconds=t_compile, image=image, **info)
        log(f"{label}: PSNR {p:.2f} dB, SSIM {q:.4f}; compile {t_compile:.2f} s, run {1e3 * seconds:.1f} ms")

    if "tv" in methods:
        from jaxrecon.solvers import tv_pdhg

        alpha = _TV_ALPHA_64 * size / 64 if tv_alpha is None else tv_alpha
        report("tv", f"TV (alpha {alpha:.3g}, {_TV_ITERATIONS} PDHG iterations)",
               lambda y: tv_pdhg(op, y, alpha, max_iter=_TV_ITERATIONS).x, alpha=alpha)
    if "lpd" in methods:
        from jaxrecon.train.experiment import load_pretrained

        model, trained = load_pretrained("lpd_quick")
        d = trained.geometry
        if (size, views, data.geom.num_detectors) != (d.shape[0], d.angles.shape[0], d.num_detectors):
            log(f"learned primal-dual: skipped (the shipped model is trained for {d.shape[0]}x{d.shape[1]}, "
                f"{d.angles.shape[0]} views, {d.num_detectors} detectors; run `jaxrecon train --model lpd` for others)")
        else:
            note = "" if abs(noise - trained.noise) < 1e-12 else f", trained at {100 * trained.noise:g}% noise"
            report("lpd", f"learned primal-dual (shipped, quick preset{note})", lambda y: model(y, op))
    return out


def _demo_figure(phantom, sinogram, recon, geom, result: dict, path: Path, extra: dict | None = None) -> None:
    """phantom | sinogram | reconstructions, rendered with the Agg canvas (no display, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    phantom, sinogram, recon = (np.asarray(a) for a in (phantom, sinogram, recon))
    angles = np.rad2deg(np.asarray(geom.angles))
    s = np.asarray(geom.detector_positions())
    n = result["size"]

    extra = extra or {}
    fig = Figure(figsize=(4.5 * (3 + len(extra)), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 3 + len(extra))
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
    labels = {"tv": "TV", "lpd": "Learned primal-dual"}
    for a, (name, m) in zip(ax[3:], extra.items()):
        im = a.imshow(np.asarray(m["image"]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        a.set_title(f"{labels[name]}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}")
        fig.colorbar(im, ax=a, shrink=0.8)
    for a in (ax[0], *ax[2:]):
        a.set_xticks([])
        a.set_yticks([])
    fig.savefig(path, dpi=100)


def _run_demo(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.output.is_dir():
        raise _UsageError(f"argument --output: {str(args.output)!r} exists and is not a directory")
    run_demo(args.size, args.views, args.noise, args.seed, args.filter, args.output,
             methods=args.methods, tv_alpha=args.tv_alpha)
    return 0


# --------------------------------------------------------------------------------------------------
# train / evaluate
# --------------------------------------------------------------------------------------------------


def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a learned reconstruction on random ellipses or LoDoPaB-CT files (checkpointed, resumable)",
        description=(
            "Train a learned reconstruction on random-ellipse CT data generated on the fly (deterministic "
            "given --seed), validating on held-out ellipses; checkpoints (weights + JSON config) go to "
            "--output and an interrupted run resumes from there (also after --minutes, Ctrl-C or SIGTERM). "
            "Presets: quick (64x64, 30 views, minutes on a CPU), quick15 (the same with 15 views), standard (128x128, Adler & Öktem's data, < 2 h per model "
            "on 2 CPU cores), paper (128x128, the paper's models and schedule, for a GPU), lodopab (LoDoPaB-CT "
            "files, --data lodopab:FOLDER: 362x362, 1000 angles, 513 detectors, the paper's models, one pass over "
            "the training split; for an accelerator). With --data lodopab:FOLDER, step k reads training samples "
            "k*batch, ... of the files in order (resumes exactly) and validation the first samples of the "
            "validation split; the shapes come from the files."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=_MODELS + _DENOISERS, required=True,
                   help="a reconstruction model, or dncnn: the noise-level-conditioned denoiser for plug-and-play, "
                   "trained on the preset's clean images (jaxrecon.train.denoiser)")
    p.add_argument("--preset", choices=_PRESETS, default=None,
                   help="model and training recipe (default: lodopab with --data lodopab:FOLDER, else quick)")
    p.add_argument("--data", type=_data_option, default="ellipses",
                   help="'ellipses' (generated on the fly) or 'lodopab:FOLDER' (the unzipped LoDoPaB-CT files)")
    p.add_argument("--output", type=Path, default=None,
                   help="checkpoint directory (default runs/<model>_<preset>, + _lodopab for LoDoPaB data under another preset)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="override the preset's number of steps")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the initialisation and the data")
    p.add_argument("--minutes", type=_positive_float, default=None,
                   help="stop after this many minutes with a checkpoint; the same command resumes the run exactly")
    p.add_argument("--checkpoint-every", type=_int_at_least(1), default=None,
                   help="steps between checkpoints (default: the preset's validation interval)")
    p.add_argument("--loss", choices=_LOSSES, default="supervised",
                   help="supervised (MSE against the truths), or self-supervised, never seeing a truth in training "
                   "(validation still scores against truths): noise2inverse (split views), ei (robust equivariant "
                   "imaging), sure (Stein's unbiased risk estimate); see jaxrecon.train.self_supervised")
    p.add_argument("--loss-option", type=_loss_option, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the loss (repeatable; JSON values), e.g. num_splits=3, domain=image, alpha=0.5")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    d = p.add_argument_group(
        "several processes (jax.distributed)",
        "Run the same command in every process (one per host or GPU): each trains on its share of every batch "
        "(data parallel over the devices of all processes, gradients all-reduced; the same run as one process up "
        "to rounding), process 0 writes the checkpoints and the log. --output must be on a filesystem all "
        "processes share. Give the three addresses, or --distributed to detect them from SLURM or Open MPI.",
    )
    d.add_argument("--distributed", action="store_true",
                   help="start jax.distributed; options not given are detected from the cluster (SLURM, Open MPI)")
    d.add_argument("--coordinator-address", type=_address, default=None, metavar="HOST:PORT",
                   help="process 0's host and a free port")
    d.add_argument("--num-processes", type=_int_at_least(1), default=None, help="the number of processes")
    d.add_argument("--process-id", type=_int_at_least(0), default=None, help="this process's index, 0 ... P-1")
    p.set_defaults(func=_run_train, parser=p)


def _one_line_errors(name: str, run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`run`, with data errors (missing files, wrong shapes) reported as one line on stderr, exit status 1."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ValueError, TypeError, FileNotFoundError, OSError, ImportError) as e:
            if args.debug:
                raise
            print(f"jaxrecon {name}: error: {e}", file=sys.stderr)
            return 1

    return wrapped


def _train_config(args: argparse.Namespace) -> tuple[dict, Path]:
    """The config and output directory of `jaxrecon train`'s options (reads LoDoPaB's shapes from its files)."""
    source, folder = args.data
    preset = args.preset or ("lodopab" if source == "lodopab" else "quick")
    if preset == "lodopab" and source != "lodopab":
        raise _UsageError("argument --preset: lodopab trains on the LoDoPaB-CT files: add --data lodopab:FOLDER")
    if args.model in _DENOISERS:
        if args.loss != "supervised" or args.loss_option:
            raise _UsageError("argument --loss: the dncnn denoiser trains on clean images with added noise; "
                              "--loss and --loss-option apply to reconstruction models")
        if source == "lodopab":
            raise _UsageError("argument --data: the dncnn denoiser trains on random-ellipse images; leave out --data")
        from jaxrecon.train.denoiser import denoiser_config

        config = denoiser_config(preset, seed=args.seed)
        if args.steps is not None:
            config["train"]["steps"] = args.steps
        return config, args.output or Path("runs") / f"{args.model}_{preset}"
    from jaxrecon.train.experiment import experiment_config

    overrides = {}
    if source == "lodopab":
        from jaxrecon.train.lodopab import lodopab_data_config

        overrides["data"] = lodopab_data_config(folder)
    options = dict(args.loss_option)
    if args.loss != "supervised" or options:
        overrides["train"] = {"loss": args.loss, "loss_options": options}
    config = experiment_config(args.model, preset, seed=args.seed, **overrides)
    if args.steps is not None:
        config["train"]["steps"] = args.steps
    suffix = "_lodopab" if source == "lodopab" and preset != "lodopab" else ""
    loss = "" if args.loss == "supervised" else f"_{args.loss}"
    return config, args.output or Path("runs") / f"{args.model}_{preset}{loss}{suffix}"


def _distributed(args: argparse.Namespace) -> dict | None:
    """`jax.distributed.initialize` arguments of the train options, or None for one process."""
    given = {"coordinator_address": args.coordinator_address, "num_processes": args.num_processes,
             "process_id": args.process_id}
    if not args.distributed and all(v is None for v in given.values()):
        return None
    if not args.distributed and any(v is None for v in given.values()):
        raise _UsageError("argument --coordinator-address: give --coordinator-address, --num-processes and "
                          "--process-id together, or --distributed to detect the missing ones from SLURM or Open MPI")
    if args.num_processes is not None and args.process_id is not None and args.process_id >= args.num_processes:
        raise _UsageError(f"argument --process-id: must be below --num-processes {args.num_processes}, "
                          f"got {args.process_id}")
    return given


def _run_train(args: argparse.Namespace) -> int:
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        raise _UsageError(f"argument --output: {str(args.output)!r} exists and is not a directory")
    _distributed(args)  # usage errors before anything starts
    return _one_line_errors("train", _train)(args)


def _train(args: argparse.Namespace) -> int:
    mesh, main = None, True
    cluster = _distributed(args)
    if cluster is not None:  # before any JAX computation
        from jaxrecon.train.distributed import initialize_distributed, is_main_process
        from jaxrecon.train.sharding import data_parallel_mesh

        initialize_distributed(**cluster)
        mesh, main = data_parallel_mesh(), is_main_process()
    say = print if main else (lambda *a, **k: None)  # process 0 speaks for all
    config, output = _train_config(args)
    if args.model in _DENOISERS:
        from jaxrecon.train.denoiser import train_denoiser as train
    else:
        from jaxrecon.train.experiment import train

    if output.exists() and not output.is_dir():
        raise _UsageError(f"argument --output: {str(output)!r} exists and is not a directory")
    _check_same_data(output, config)
    import signal

    from jaxrecon.train.checkpoint import latest_checkpoint

    def terminate(signum, frame):  # SIGTERM (a scheduler stopping the job) ends like Ctrl-C: checkpoint, then exit
        raise KeyboardInterrupt

    done = _finished_run(output, config)
    if done is not None:
        say(f"already trained: {done}; nothing to do (evaluate it with `jaxrecon evaluate {output}`, "
            "or pass --steps N for more steps)")
        return 0
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        result = train(config, output, progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
                       time_limit=None if args.minutes is None else 60 * args.minutes, mesh=mesh)
    except KeyboardInterrupt:
        ckpt = latest_checkpoint(output) if output.is_dir() else None
        where = f"checkpoint {ckpt}" if ckpt is not None else "no checkpoint (nothing was trained yet)"
        say(f"interrupted: {where}; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    h = result.history
    val = h.get("val_psnr_mean") or [float("nan")]
    done, total = h["step"][-1] + 1 if h["step"] else 0, config["train"]["steps"]
    if done < total:
        last = f", last validation PSNR {val[-1]:.2f} dB" if h.get("val_psnr_mean") else ""
        say(f"stopped after {args.minutes:g} minutes at step {done} of {total} (loss {h['loss'][-1]:.3g}{last}); "
            f"checkpoint in {output}; run the same command again to resume")
        return 0
    loss = config["train"].get("loss", "supervised")
    what = f"{args.model} ({config['preset']}{'' if loss == 'supervised' else ', ' + loss + ' loss'})"
    say(f"trained {what} for {total} steps: final loss "
        f"{h['loss'][-1]:.3g}, validation PSNR {val[-1]:.2f} dB; checkpoint in {output}")
    return 0


def _check_same_data(output: Path, config: dict) -> None:
    """A run in `output` on other data (another preset's size, another LoDoPaB folder) is not resumed."""
    from jaxrecon.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(output) if output.is_dir() else None
    try:
        stored = json.loads((ckpt / "config.json").read_text())["config"] if ckpt is not None else None
        saved = stored["data"] if stored is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return  # a broken checkpoint: let training's loader report it
    if saved is not None and saved != json.loads(json.dumps(config["data"])):
        raise ValueError(f"{output} holds a run on other data ({saved}); choose another --output to train on "
                         f"{config['data']}")
    if stored is not None and stored.get("model") != config["model"]:
        raise ValueError(f"{output} holds a {stored.get('model')} run; choose another --output to train {config['model']}")
    train_cfg = stored.get("train") if isinstance(stored, dict) and isinstance(stored.get("train"), dict) else {}
    loss = train_cfg.get("loss", "supervised")
    if stored is not None and loss != config["train"].get("loss", "supervised"):
        raise ValueError(f"{output} holds a run with the {loss} loss; choose another --output to train with "
                         f"the {config['train'].get('loss', 'supervised')} loss")


def _finished_run(output: Path, config: dict) -> str | None:
    """A one-line summary if `output`'s newest checkpoint already holds every step of `config`."""
    from jaxrecon.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(output) if output.is_dir() else None
    if ckpt is None:
        return None
    try:
        saved = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError):
        return None  # a broken checkpoint: let training's loader report it
    if saved.get("config") != json.loads(json.dumps(config)) or saved.get("step", -1) < config["train"]["steps"]:
        return None
    val = (saved.get("history") or {}).get("val_psnr_mean") or []
    last = f", validation PSNR {val[-1]:.2f} dB" if val else ""
    return f"{ckpt} holds all {config['train']['steps']} steps{last}"


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on Shepp-Logan and held-out test ellipses, or on LoDoPaB-CT's test split",
        description=(
            "Load a checkpoint written by `jaxrecon train` (a run directory or one step_* folder) and report "
            "PSNR/SSIM on the Shepp-Logan phantom and on --samples test ellipses (the test split, never "
            "seen in training or validation), and the time per reconstruction. A checkpoint trained on "
            "LoDoPaB-CT is scored on the test split of its files (or of --data lodopab:FOLDER) with the "
            "challenge's PSNR and SSIM (data range of each ground truth; 7x7 uniform SSIM window)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=_data_option, default=None,
                   help="'ellipses' or 'lodopab:FOLDER' (default: the data the checkpoint was trained on)")
    p.add_argument("--samples", type=_int_at_least(1), default=None,
                   help="number of test samples (default: 16 ellipses, or all of LoDoPaB-CT's test split)")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=_run_evaluate, parser=p)


def _run_evaluate(args: argparse.Namespace) -> int:
    if not args.checkpoint.exists():
        raise _UsageError(f"argument checkpoint: {str(args.checkpoint)!r} does not exist")
    return _one_line_errors("evaluate", _evaluate)(args)


def _evaluate(args: argparse.Namespace) -> int:
    from jaxrecon.train.checkpoint import load_config
    from jaxrecon.train.experiment import load_trained

    if load_config(args.checkpoint).get("model") in _DENOISERS:
        return _evaluate_denoiser(args)
    model, data, config = load_trained(args.checkpoint)
    trained_on = config["data"].get("source", "ellipses")
    source, folder = args.data or (trained_on, None)
    if source != trained_on:
        raise ValueError(f"{args.checkpoint} was trained on {trained_on}, not {source}; evaluate it on its own data "
                         "(leave out --data)")
    result = {"checkpoint": str(args.checkpoint), "model": config["model"], "preset": config["preset"],
              "loss": config["train"].get("loss", "supervised")}
    if source == "lodopab":
        result["lodopab_test"] = _evaluate_lodopab(model, data, folder, args.samples, config["model"])
    else:
        result.update(_evaluate_ellipses(model, data, config, args.samples or 16))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _evaluate_denoiser(args: argparse.Namespace) -> int:
    """A denoiser checkpoint: PSNR of noisy and denoised test images at the config's validation levels."""
    if args.data is not None and args.data[0] != "ellipses":
        raise ValueError(f"{args.checkpoint} is a denoiser trained on random-ellipse images; leave out --data")
    from jaxrecon.train import batch_keys
    from jaxrecon.train.denoiser import clean_images, evaluate_denoiser, load_denoiser
    from jaxrecon.train.experiment import build_data

    net, config = load_denoiser(args.checkpoint)
    samples = args.samples or 16
    data = build_data(config, net.first.weight.dtype)
    images = clean_images(data, batch_keys(config["seed"], "test", 0, samples))
    levels = config["train"]["validation_levels"]
    scores = evaluate_denoiser(net, images, levels, seed=config["seed"])
    for level in levels:
        print(f"dncnn at sigma {level:g} on {samples} test images: PSNR {scores[f'psnr_noisy_{level:g}']:.2f} dB noisy "
              f"-> {scores[f'psnr_{level:g}']:.2f} dB denoised (gain {scores[f'gain_{level:g}']:.2f} dB)")
    result = {"checkpoint": str(args.checkpoint), "model": config["model"], "preset": config["preset"], "test": scores}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _evaluate_ellipses(model, data, config: dict, samples: int) -> dict:
    import jax

    from jaxrecon.train import batch_keys, evaluate, shepp_logan_sample

    op = data.operator
    sl = jax.tree.map(lambda a: a[None], shepp_logan_sample(data))
    test = jax.jit(jax.vmap(data.sample))(batch_keys(config["seed"], "test", 0, samples))
    result = {"shepp_logan": evaluate(model, op, sl), "test": evaluate(model, op, test)}
    for name, r in (("Shepp-Logan", result["shepp_logan"]), (f"{samples} test ellipses", result["test"])):
        print(f"{config['model']} on {name}: PSNR {r['psnr_mean']:.2f} dB (std {r['psnr_std']:.2f}), "
              f"SSIM {r['ssim_mean']:.4f}; {1e3 * r['seconds_per_reconstruction']:.1f} ms per reconstruction")
    return result


def _evaluate_lodopab(model, data, folder: Path | None, samples: int | None, name: str) -> dict:
    from jaxrecon.train.lodopab import LoDoPaBData, evaluate_lodopab

    if folder is not None:
        data = LoDoPaBData(data.geometry, str(folder))
    r = evaluate_lodopab(model, data, "test", samples)
    print(f"{name} on {r['samples']} LoDoPaB-CT test samples ({data.path}), challenge scores: PSNR {r['psnr_mean']:.2f} dB "
          f"(std {r['psnr_std']:.2f}), SSIM {r['ssim_mean']:.4f} (std {r['ssim_std']:.4f}); "
          f"{1e3 * r['seconds_per_reconstruction']:.1f} ms per reconstruction")
    return dict(r, path=data.path)


# --------------------------------------------------------------------------------------------------
# reconstruct
# --------------------------------------------------------------------------------------------------

_RECON_METHODS = ("fbp", "tv", "cgls", "lpd")
_ANGLE_UNITS = ("auto", "degree", "radian")  # mirrors jaxrecon.data.scan.ANGLE_UNITS
_RECON_ITERATIONS = {"tv": 300, "cgls": 30}


def _centre_option(text: str):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number (pixels), got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _add_reconstruct(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct one slice of a measured scan (HDF5/DXchange, TIFF, NumPy) and write it with a PNG preview",
        description=(
            "Read one detector row of a scan (HDF5 in the DXchange layout exchange/data, data_white, data_dark, "
            "theta; or a 'sinogram' dataset; a TIFF stack with --flats/--darks/--angles; .npy/.npz), flat/dark "
            "correct and take the negative log (counts below 0.1 clipped and counted), optionally remove rings "
            "and estimate the centre of rotation, reconstruct (parallel beam) and write the image (HDF5, TIFF "
            "or .npy, with the geometry and settings) and a PNG preview next to it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("scan", type=Path, help="the scan file (or a folder / glob of TIFF projections)")
    p.add_argument("--method", choices=_RECON_METHODS, default="fbp")
    p.add_argument("--output", type=Path, default=None,
                   help="output file (.h5/.hdf5, .tif/.tiff or .npy; default <scan>_<method>.h5 beside the scan); "
                        "the preview is the same path with .png")
    p.add_argument("--row", type=_int_at_least(0), default=None, help="detector row of 3D projections (default: middle)")
    p.add_argument("--size", type=_int_at_least(8), default=None,
                   help="image side N (default: the stored geometry's, else the number of detector columns)")
    p.add_argument("--filter", choices=_FILTERS, default="hann", help="FBP filter")
    p.add_argument("--iterations", type=_int_at_least(1), default=None,
                   help=f"iterations of tv / cgls (default {_RECON_ITERATIONS['tv']} / {_RECON_ITERATIONS['cgls']})")
    p.add_argument("--tv-alpha", type=_positive_float, default=None,
                   help="TV weight (default 0.02 * N * the 99th percentile of the FBP image, the demo's 1.26 at "
                        "64x64 for images of range 1; tune it)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="lpd: a checkpoint of `jaxrecon train` (default: the shipped 64x64, 30-view model)")
    p.add_argument("--centre", type=_centre_option, default=None,
                   help="detector offset of the rotation axis in pixels, or 'auto' to estimate it (jaxrecon.adapt.estimate_centre)")
    p.add_argument("--angle-unit", choices=_ANGLE_UNITS, default="auto",
                   help="unit of the file's angles (auto: the format's convention, degrees for DXchange theta)")
    p.add_argument("--mu", type=_positive_float, default=1.0,
                   help="divide the post-log data by this attenuation scale (e.g. to pixel units)")
    p.add_argument("--rings", action="store_true", help="remove ring artefacts (jaxrecon.data.remove_rings)")
    p.add_argument("--flats", type=Path, default=None, help="TIFF: open-beam frames (file, folder or glob)")
    p.add_argument("--darks", type=Path, default=None, help="TIFF: dark frames")
    p.add_argument("--angles", type=Path, default=None, help="TIFF: angles file (.txt or .npy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for iterative methods")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=_run_reconstruct, parser=p)


def _run_reconstruct(args: argparse.Namespace) -> int:
    import warnings

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            code = _reconstruct(args)
    except (ValueError, TypeError, FileNotFoundError, OSError, ImportError) as e:
        _print_warnings(caught)
        if args.debug:
            raise
        print(f"jaxrecon reconstruct: error: {e}", file=sys.stderr)
        return 1
    _print_warnings(caught)
    return code


def _print_warnings(caught) -> None:
    for w in caught or ():
        if issubclass(w.category, UserWarning):
            print(f"jaxrecon reconstruct: warning: {w.message}", file=sys.stderr)


def _progress_operator(op, total: int, label: str, enabled: bool):
    """`op` whose forward application ticks a tqdm bar from inside the compiled loop (one A per iteration)."""
    if not enabled:
        return op, None
    import equinox as eqx
    import jax
    from tqdm.auto import tqdm

    from jaxrecon.operators import LinearOperator

    bar = tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False)

    def tick():
        if bar.n < total:
            bar.update(1)

    class Ticking(LinearOperator):
        inner: LinearOperator
        callback: Any = eqx.field(static=True)

        def mv(self, x):
            jax.debug.callback(self.callback)
            return self.inner.mv(x)

        def rmv(self, y):
            return self.inner.rmv(y)

        @property
        def in_shape(self):
            return self.inner.in_shape

        @property
        def out_shape(self):
            return self.inner.out_shape

    return Ticking(op, tick), bar


def _reconstruct(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrecon.data import normalize, read_scan, remove_rings, write_preview, write_reconstruction

    if args.method not in ("tv", "cgls") and args.iterations is not None:
        raise _UsageError("argument --iterations: only for --method tv or cgls")
    output = args.output or args.scan.with_name(f"{args.scan.stem.rstrip('*')}_{args.method}.h5")
    t0 = time.perf_counter()
    scan = read_scan(args.scan, row=args.row, angle_unit=args.angle_unit,
                     flats=args.flats, darks=args.darks, angles=args.angles)
    clipped = 0
    if scan.post_log:
        y = jnp.asarray(scan.projections) / args.mu
    else:
        y, clipped = jax.jit(normalize)(scan.projections, scan.flats, scan.darks, mu=args.mu)
        clipped = int(clipped)
    if args.rings:
        y = remove_rings(y)
    model = None
    shape = None if args.size is None else (args.size, args.size)
    if args.method == "lpd":
        from jaxrecon.train.experiment import load_pretrained, load_trained

        model, data = (load_trained(args.checkpoint)[:2] if args.checkpoint is not None else load_pretrained("lpd_quick"))
        trained = data.geometry
        shape = shape or tuple(trained.shape)
    geom = scan.parallel_geometry(shape)
    if args.centre is not None:
        from jaxrecon.adapt import estimate_centre, with_centre

        offset = float(estimate_centre(y, geom)) if args.centre == "auto" else float(args.centre)
        geom = with_centre(geom, offset)
    y = y.astype(geom.angles.dtype)
    settings = {"method": args.method, "scan": str(args.scan), "row": -1 if args.row is None else args.row,
                "mu": args.mu, "rings": args.rings, "clipped": clipped,
                "detector_offset": float(geom.detector_offset)}
    from jaxrecon.operators import ParallelBeamGeometry, RadonTransform, fbp

    op = RadonTransform(geom)
    if args.method == "fbp":
        image = jax.jit(fbp, static_argnums=2)(y, geom, args.filter)
        settings["filter"] = args.filter
    elif args.method in ("tv", "cgls"):
        from jaxrecon.operators import operator_norm
        from jaxrecon.solvers import cgls, tv_pdhg

        iterations = args.iterations or _RECON_ITERATIONS[args.method]
        ticking, bar = _progress_operator(op, iterations, args.method.upper(), not args.no_progress)
        settings["iterations"] = iterations
        if args.method == "cgls":
            sol = jax.jit(lambda o, y: cgls(o, y, max_iter=iterations))(ticking, y)
        else:
            alpha = args.tv_alpha
            if alpha is None:
                ref = np.asarray(jax.jit(fbp, static_argnums=2)(y, geom, "hann"))
                alpha = 0.02 * geom.shape[0] * max(float(np.percentile(ref, 99)), 1e-12)
            settings["tv_alpha"] = alpha
            norm = operator_norm(op)  # power iteration outside the ticking operator
            sol = jax.jit(lambda o, y: tv_pdhg(o, y, alpha, max_iter=iterations, op_norm=norm))(ticking, y)
        image = jax.block_until_ready(sol.x)
        if bar is not None:
            bar.close()
    else:
        trained = data.geometry
        if tuple(trained.sinogram_shape) != tuple(geom.sinogram_shape) or tuple(trained.shape) != tuple(geom.shape):
            raise ValueError(
                f"{args.scan}: the learned model is trained for {trained.shape[0]}x{trained.shape[1]} images and "
                f"sinograms {tuple(trained.sinogram_shape)}, the scan gives {tuple(geom.sinogram_shape)}; train one "
                "for this geometry (`jaxrecon train`) and pass --checkpoint"
            )
        dtype = trained.angles.dtype  # the model's precision (the shipped one is float32, also under x64)
        g = ParallelBeamGeometry(geom.shape, geom.angles.astype(dtype), geom.num_detectors,
                                 geom.detector_spacing.astype(dtype), geom.detector_offset.astype(dtype))
        image = jax.jit(lambda y, op: model(y, op))(y.astype(dtype), RadonTransform(g))
        settings["checkpoint"] = str(args.checkpoint or "shipped lpd_quick")
    image = np.asarray(image)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_reconstruction(output, image, geom, settings)
    png = output.with_suffix(".png")
    write_preview(png, image, f"{args.method.upper()}: {args.scan.name}")
    n_values = int(np.prod(scan.projections.shape))
    print(f"{args.method}: {geom.num_angles} angles x {geom.num_detectors} detectors -> {geom.shape[0]}x{geom.shape[1]} "
          f"image in {time.perf_counter() - t0:.1f} s; {clipped} of {n_values} values clipped"
          + (f"; centre offset {float(geom.detector_offset):.3f} px" if args.centre is not None else ""))
    print(f"wrote {output} and {png}")
    return 0


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad option found after parsing; reported like argparse's own errors (exit status 2)."""


_SUBCOMMANDS = (_add_demo, _add_train, _add_evaluate, _add_reconstruct)


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
    for sub in subparsers.choices.values():  # every subcommand: --debug shows the traceback of an error
        try:
            sub.add_argument("--debug", action="store_true", help="show the traceback of an error")
        except argparse.ArgumentError:
            pass  # the subcommand declares it itself
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`) and run the subcommand; returns the exit status.

    Bad options exit through argparse (`SystemExit(2)` with a message on stderr); errors while
    running (`ValueError`, `TypeError`, `OSError`, `ImportError`) print one line on stderr and
    return 1, or raise with `--debug`.
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
    except (ValueError, TypeError, OSError, ImportError) as e:  # a user error while running: one line
        if args.debug:
            raise
        print(f"jaxrecon {args.command}: error: {e} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
