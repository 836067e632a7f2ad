"""Projector benchmark: jaxrecon vs ASTRA CPU (`linear`, `line`) vs scikit-image, in one run.

For N in --sizes: an N x N image, N angles in [0, pi), ceil(sqrt(2) N) detectors. Per library it
times the forward projection, the backprojection (for jaxrecon and ASTRA: the exact adjoint of their
forward; scikit-image has none, so its `iradon` is listed under FBP only), FBP, and a batch of 16
images (jaxrecon: one vmapped call; others: a loop). Times are medians of --repeats runs after a
warm-up; jaxrecon's compile time is reported apart. Each (library, N) runs in its own subprocess, so
its peak resident memory (ru_maxrss) is its own. CPU time / wall time shows how many cores a method
used.

    python benchmarks/projector.py                  # N = 128, 256, 512
    python benchmarks/projector.py --sizes 64 --repeats 3 --out /tmp/bench   # quick check

Writes <out>/projector.json and <out>/projector.md (default out: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np

from harness import (RESULTS, command, markdown_table, run_worker, send_result, versions, wall_cpu_seconds,
                     write_results)

LIBRARIES = ("jaxrecon", "astra-linear", "astra-line", "skimage")
BATCH = 16


def _phantom(n):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)


def _worker_jaxrecon(n, repeats):
    import jax
    import jax.numpy as jnp

    from jaxrecon.operators import ParallelBeamGeometry, backproject, fbp, radon

    geom = ParallelBeamGeometry.uniform((n, n), n, math.ceil(math.sqrt(2) * n), dtype=jnp.float32)
    x = jnp.asarray(_phantom(n))
    y = radon(x, geom)
    xs = jnp.stack([x] * BATCH)
    fwd, adj = jax.jit(radon), jax.jit(backproject)
    rec = jax.jit(lambda y, g: fbp(y, g, "ram-lak"))
    batched = jax.jit(jax.vmap(radon, (0, None)))
    out = {}
    for name, f, arg in [("forward", fwd, x), ("backproject", adj, y), ("fbp", rec, y), ("forward_batch16", batched, xs)]:
        r = wall_cpu_seconds(lambda: jax.block_until_ready(f(arg, geom)), repeats)
        r["compile_seconds"] = max(0.0, r["first_call_seconds"] - r["seconds"])
        out[name] = r
    return out


def _astra_geoms(n, projector):
    import astra

    d = math.ceil(math.sqrt(2) * n)
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, d, np.arange(n) * np.pi / n)
    return vg, pg, astra.create_projector(projector, pg, vg)


def _worker_astra(n, repeats, projector):
    import astra

    vg, pg, pid = _astra_geoms(n, projector)
    x = _phantom(n)
    sid, y = astra.create_sino(x, pid)
    astra.data2d.delete(sid)

    def forward():
        i, _ = astra.create_sino(x, pid)
        astra.data2d.delete(i)

    def backproject():
        i, _ = astra.create_backprojection(y, pid)
        astra.data2d.delete(i)

    def fbp():
        sino = astra.data2d.create("-sino", pg, y)
        rec = astra.data2d.create("-vol", vg)
        cfg = astra.astra_dict("FBP")
        cfg.update(ReconstructionDataId=rec, ProjectionDataId=sino, ProjectorId=pid, option={"FilterType": "ram-lak"})
        alg = astra.algorithm.create(cfg)
        astra.algorithm.run(alg)
        astra.data2d.get(rec)
        astra.algorithm.delete(alg)
        astra.data2d.delete([sino, rec])

    def forward_batch():
        for _ in range(BATCH):
            forward()

    return {name: wall_cpu_seconds(f, repeats) for name, f in
            [("forward", forward), ("backproject", backproject), ("fbp", fbp), ("forward_batch16", forward_batch)]}


def _worker_skimage(n, repeats):
    from skimage.transform import iradon, radon

    x = _phantom(n)
    theta = np.arange(n) * 180.0 / n
    y = radon(x, theta=theta, circle=False)
    reps = repeats if n <= 256 else max(2, repeats // 3)  # radon is slow at 512
    return {
        "forward": wall_cpu_seconds(lambda: radon(x, theta=theta, circle=False), reps),
        "fbp": wall_cpu_seconds(lambda: iradon(y, theta=theta, filter_name="ramp", circle=False, output_size=n), reps),
    }


def _worker(lib, n, repeats):
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if lib == "jaxrecon":
        res = _worker_jaxrecon(n, repeats)
    elif lib.startswith("astra-"):
        res = _worker_astra(n, repeats, lib.split("-", 1)[1])
    else:
        res = _worker_skimage(n, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(library=lib, n=n, num_angles=n, num_detectors=math.ceil(math.sqrt(2) * n),
                peak_rss_mb=peak / 1024, rss_at_start_mb=base / 1024, results=res)


def _markdown(rows, meta):
    def ms(r, op):
        return f"{r['results'][op]['seconds'] * 1e3:.1f}" if op in r["results"] else "-"

    lines = [
        "# Projector benchmark",
        "",
        f"`{meta['command']}` on {meta['machine']} ({meta['cpus']} cores), {meta['date']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        "",
        "N x N Shepp-Logan, N angles, ceil(sqrt(2) N) detectors, float32. Median wall time (ms) of repeated "
        "runs after a warm-up; compile time apart. Backprojection = the exact adjoint of each library's forward "
        "(scikit-image has none). FBP: ram-lak (scikit-image: `iradon`). Batch: 16 images (jaxrecon: one vmapped "
        "call; others: a loop). Cores: CPU time / wall time of the forward. Peak RSS: whole worker process.",
        "",
    ]
    table = []
    for r in rows:
        res = r["results"]
        cores = res["forward"]["cpu_seconds"] / max(res["forward"]["seconds"], 1e-12)
        comp = "/".join(f"{res[o]['compile_seconds']:.2f}" for o in ("forward", "backproject", "fbp")) if "compile_seconds" in res["forward"] else "-"
        table.append([r["n"], r["library"], *(ms(r, op) for op in ("forward", "backproject", "fbp", "forward_batch16")),
                      f"{cores:.1f}", comp, f"{r['peak_rss_mb']:.0f}"])
    lines += markdown_table(["N", "library", "forward", "backproject", "FBP", "batch of 16", "cores used",
                             "compile (fwd/bp/fbp) s", "peak RSS MB"], table)
    lines += ["", "Ratios jaxrecon / ASTRA `linear` (wall time; < 1 means jaxrecon is faster), and speed-up over scikit-image's radon:", ""]
    lines += markdown_table(["N", "forward", "backproject", "FBP", "batch of 16", "x faster than skimage radon"], [
        [n, *(f"{ratio[op]:.3f}" for op in ("forward", "backproject", "fbp", "forward_batch16")),
         f"{ratio['skimage_radon_speedup']:.1f}"] for n, ratio in meta["ratios"].items()])
    lines += ["", "## Notes", "", *meta["notes"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "- Design history (jaxrecon forward / exact adjoint at N = 256, measured during development on this machine "
    "class with other work running, so indicative only): (1) per-angle `lax.map` chunks of 8 angles, gathers "
    "materialised as (8, D, N) arrays and a separate reduction: 135-155 ms / 172-285 ms (chunks 4-32); "
    "ASTRA `linear` in the same runs 110-119 ms / 62-70 ms. (2) Loops whose body is purely elementwise "
    "(forward: over image lines with all A x D rays vectorised; adjoint: over angles with all pixels "
    "vectorised; 4 iterations unrolled per step), so XLA fuses gathers and accumulation into one parallel "
    "loop: 15.6 ms / 11.8-13.1 ms. Unrolling 1/2/4/8: forward 39/16.5/15.6/15.3 ms, adjoint 14.5/11.8/13.1/20.6 ms; "
    "4 is the default for both.",
    "- The exact adjoint is a pixel-driven gather over the ceil(2 / detector_spacing) bins that can reach a "
    "pixel; `radon` and `backproject` are JAX primitives that are each other's transpose, so gradients never "
    "use XLA's slow scatter.",
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=2, metavar=("LIBRARY", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        send_result(_worker(args.worker[0], int(args.worker[1]), args.repeats))
        return
    rows = []
    for n in args.sizes:
        for lib in args.libraries:
            print(f"N={n} {lib} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, n, "--repeats", args.repeats]
            rows.append(run_worker(cmd, label=f"worker {lib} N={n}"))
            print(json.dumps({k: round(v["seconds"] * 1e3, 2) for k, v in rows[-1]["results"].items()}), file=sys.stderr)
    ratios = {}
    for n in args.sizes:
        by = {r["library"]: r["results"] for r in rows if r["n"] == n}
        if "jaxrecon" in by and "astra-linear" in by:
            ratios[n] = {op: by["jaxrecon"][op]["seconds"] / by["astra-linear"][op]["seconds"]
                         for op in ("forward", "backproject", "fbp", "forward_batch16")}
            if "skimage" in by:
                ratios[n]["skimage_radon_speedup"] = by["skimage"]["forward"]["seconds"] / by["jaxrecon"]["forward"]["seconds"]
            else:
                ratios[n]["skimage_radon_speedup"] = float("nan")
    meta = dict(command=command(__file__, argv),
                machine=f"{platform.machine()} {platform.processor() or platform.system()}", cpus=os.cpu_count(),
                date=time.strftime("%Y-%m-%d"),
                versions=versions(("jax", "jaxlib", "astra-toolbox", "scikit-image", "numpy")), ratios=ratios, notes=NOTES)
    write_results("projector", dict(meta=meta, rows=rows), _markdown(rows, meta), args.out)
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
