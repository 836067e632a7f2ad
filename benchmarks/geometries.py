"""Fan- and cone-beam projectors against peers on the same machine, in one run (issue 14).

1. **Fan beam** (2D): N x N image, N views over 2 pi, source at 2N, flat detector at N, bins 1.5 apart
   (one pixel at the centre), the fewest bins that see the image's circumscribed circle. jaxrecon's
   `project`/`backproject` with a `FanBeamGeometry` against ASTRA's CPU `line_fanflat` and
   `strip_fanflat` on `create_proj_geom('fanflat', 1.5, D, angles, 2N, N)`: the same geometry angle for
   angle (tests/operators/test_fan_beam.py). The bar (issue 14): jaxrecon >= 3x faster than ASTRA CPU.
2. **Cone beam** (3D): n^3 volume, views over 2 pi, source at 2n, flat detector at n with pixels 1.6
   apart. jaxrecon's `project`/`backproject` with a `ConeBeamGeometry` against mbirjax's `ConeBeamModel`
   (own venv: mbirjax 0.7.3 excludes jax 0.10.2, so it runs on jax 0.10.1) with
   `source_iso_dist=2n`, `source_detector_dist=3n`, `delta_det_row = delta_det_channel = 1.6`,
   `delta_voxel=1`, `recon_shape=(n, n, n)`, `use_ror_mask=False` (the whole box, like ours) and the same
   angles; mbirjax's volume `(rows, cols, slices)` is ours `(Z, Y, X)` with y flipped:
   `mb = transpose(ours[:, ::-1, :], (1, 2, 0))`; sinograms `(views, rows, channels)` are the same.
3. **Memory**: a 256^3 volume to 360 views of 384 x 384 (the cone geometry above), float32: XLA's
   `compiled.memory_analysis()` of `project` and `backproject` for several view batch sizes and view
   counts, and the peak RSS of a fresh process for one real run of each at the default batch size.

Every library runs in its own worker process; ours' forward and adjoint outputs are saved so that each
peer's outputs are compared with them (relative difference: conventions aligned) and each pair is
dot-tested (<Ax, y> against <x, A^T y>, y = ours' projection). Times are medians of --repeats calls
after a warm-up call; compile time (first call minus median) is reported apart.

    python benchmarks/geometries.py            # full run (~20 min on 2 busy cores)
    python benchmarks/geometries.py --smoke --out /tmp/geometries   # tiny sizes, seconds

Writes <out>/geometries.json and <out>/geometries.md (default out: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from harness import (RESULTS, command, machine, markdown_table, peak_rss_mb, peer_python, run_worker, send_result,
                     verdict, versions, wall_cpu_seconds, write_results)

MBIRJAX = "mbirjax==0.7.3"
ASTRA_FAN = ("line_fanflat", "strip_fanflat")
MiB = 2**20
# Sizes: fan N; cone (n, views, detector side, repeats); memory (n, views, detector side), batch sizes,
# view counts for XLA's analysis, and the views of the real runs (forward, adjoint).
# View counts that are not a multiple of the batch size (90 and 20 here) show the cost of lax.map's remainder.
FULL = dict(fan=[256, 512], fan_repeats=5, cone=[(128, 128, 192, 3), (256, 64, 384, 2)],
            memory=(256, 360, 384), batch_sizes=[4, 8, 24], view_counts=[90, 120, 360], rss_views=(360, 360))
# An accelerator (benchmarks/device_run.py): the larger sizes, jaxrecon alone (the peers' environments need
# the network to install; the device machines have none).
GPU = dict(fan=[512, 1024], fan_repeats=5, cone=[(256, 64, 384, 3), (512, 32, 768, 2)],
           memory=(256, 360, 384), batch_sizes=[8, 24], view_counts=[120, 360], rss_views=(360, 360))
SMOKE = dict(fan=[32], fan_repeats=2, cone=[(16, 8, 32, 1)],
             memory=(16, 24, 32), batch_sizes=[2, 4], view_counts=[8, 20, 24], rss_views=(24, 24))


# --------------------------------------------------------------------------------------------------
# Phantoms and geometries (numpy only: the mbirjax worker runs in another environment)
# --------------------------------------------------------------------------------------------------

ELLIPSOIDS = [((0, 0, 0), (0.85, 0.7, 0.6), 1.0), ((0.3, -0.3, 0.2), (0.2, 0.15, 0.3), 0.5),
              ((-0.4, 0.25, -0.2), (0.15, 0.3, 0.1), -0.4), ((0.1, 0.5, 0.35), (0.1, 0.1, 0.1), 0.8)]


def phantom(n: int, ndim: int) -> np.ndarray:
    """Asymmetric ellipsoids (2D: their z = 0 section) on an n^ndim float32 grid, axes (Z,) Y, X."""
    c = ((np.arange(n) - (n - 1) / 2) / (n / 2)).astype(np.float32)
    axes = [c.reshape([-1 if i == k else 1 for i in range(ndim)]) for k in range(ndim)]
    out = np.zeros((n,) * ndim, np.float32)
    for centre, radii, value in ELLIPSOIDS:
        r2 = sum(((a - m) / r) ** 2 for a, m, r in zip(axes, centre[3 - ndim:], radii[3 - ndim:]))
        out += np.float32(value) * (r2 <= 1)
    return out


def cone_geometry(n, views, det):
    import jax.numpy as jnp

    from jaxrecon.operators import ConeBeamGeometry

    return ConeBeamGeometry.uniform((n, n, n), views, (det, det), 2.0 * n, 1.0 * n, det_spacing=(1.6, 1.6),
                                    dtype=jnp.float32)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _dot_gap(x, ax, y, aty) -> float:
    """|<Ax, y> - <x, A^T y>| / |<Ax, y>| in float64."""
    lhs = np.vdot(np.asarray(ax, np.float64), np.asarray(y, np.float64))
    return float(abs(lhs - np.vdot(np.asarray(x, np.float64), np.asarray(aty, np.float64))) / abs(lhs))


# --------------------------------------------------------------------------------------------------
# Workers (one process each): time forward and adjoint, save outputs for the comparison
# --------------------------------------------------------------------------------------------------


def _measure(spec, tag, forward, adjoint, x, y=None, compiled=True, adjoint_to_ours=lambda v: v):
    """Time `forward(x)`, then `adjoint(y)` (`y`: the forward's output if None), each a blocking callable
    returning NumPy; dot-test the pair on (x, y); save both outputs (the adjoint's mapped to our layout) as
    `<scratch>/<tag>_{forward,adjoint}.npy`. The worker's result."""
    outs, timings = {}, {}
    for name, fn in (("forward", forward), ("adjoint", adjoint)):
        arg = x if name == "forward" else (outs["forward"] if y is None else y)
        r = wall_cpu_seconds(lambda: outs.__setitem__(name, fn(arg)), spec["repeats"])  # noqa: B023
        if compiled:
            r["compile_seconds"] = max(0.0, r["first_call_seconds"] - r["seconds"])
        timings[name] = r
    y = outs["forward"] if y is None else y
    scratch = Path(spec["scratch"])
    np.save(scratch / f"{tag}_forward.npy", outs["forward"])
    np.save(scratch / f"{tag}_adjoint.npy", adjoint_to_ours(outs["adjoint"]))
    return dict(spec, results=timings, dot_test=_dot_gap(x, outs["forward"], y, outs["adjoint"]),
                peak_rss_mb=peak_rss_mb())


def _jitted_pair(geom):
    """`project` and `backproject` of `geom` (a traced argument), jitted, NumPy out."""
    import jax

    from jaxrecon.operators import backproject, project

    f, b = jax.jit(lambda x, g: project(x, g)), jax.jit(lambda y, g: backproject(y, g))
    return lambda x: np.asarray(f(x, geom)), lambda y: np.asarray(b(y, geom))


def _worker_fan_jaxrecon(spec):
    import jax.numpy as jnp

    from jaxrecon.operators import FanBeamGeometry

    n = spec["n"]
    g = FanBeamGeometry.uniform((n, n), n, 2.0 * n, 1.0 * n, detector_spacing=1.5, dtype=jnp.float32)
    res = _measure(spec, f"fan{n}_jaxrecon", *_jitted_pair(g), jnp.asarray(phantom(n, 2)))
    return dict(res, num_detectors=g.num_detectors, adjoint_taps=g.adjoint_taps)


def _worker_fan_astra(spec):
    import astra

    n, projector = spec["n"], spec["library"].split(" ")[1]
    pg = astra.create_proj_geom("fanflat", 1.5, spec["num_detectors"], np.arange(n) * 2 * np.pi / n, 2.0 * n, 1.0 * n)
    pid = astra.create_projector(projector, pg, astra.create_vol_geom(n, n))

    def forward(x):
        i, s = astra.create_sino(x, pid)
        astra.data2d.delete(i)
        return s

    def adjoint(y):
        i, v = astra.create_backprojection(y, pid)
        astra.data2d.delete(i)
        return v

    y = np.load(Path(spec["scratch"]) / f"fan{n}_jaxrecon_forward.npy")
    res = _measure(spec, f"fan{n}_{projector}", forward, adjoint, phantom(n, 2), y, compiled=False)
    return dict(res, versions=versions(["astra-toolbox"]))


def _worker_cone_jaxrecon(spec):
    import jax.numpy as jnp

    n = spec["n"]
    g = cone_geometry(n, spec["views"], spec["det"])
    return _measure(spec, f"cone{n}_jaxrecon", *_jitted_pair(g), jnp.asarray(phantom(n, 3)))


def _worker_cone_mbirjax(spec):
    import mbirjax as mj  # first: it sets up its CPU devices before jax starts

    n, views, det = spec["n"], spec["views"], spec["det"]
    model = mj.ConeBeamModel((views, det, det), np.arange(views) * 2 * np.pi / views,
                             source_detector_dist=3.0 * n, source_iso_dist=2.0 * n)
    model.set_params(recon_shape=(n, n, n), delta_voxel=1.0, delta_det_channel=1.6, delta_det_row=1.6,
                     use_ror_mask=False, verbose=0)
    # Volumes: mbirjax (rows, cols, slices) = ours (Z, Y, X) with y flipped; sinograms alike.
    x = np.ascontiguousarray(np.transpose(phantom(n, 3)[:, ::-1, :], (1, 2, 0)))
    y = np.load(Path(spec["scratch"]) / f"cone{n}_jaxrecon_forward.npy")
    res = _measure(spec, f"cone{n}_mbirjax", lambda v: np.asarray(model.forward_project(v)),
                   lambda s: np.asarray(model.back_project(s)), x, y,
                   adjoint_to_ours=lambda v: np.transpose(v, (2, 0, 1))[:, ::-1, :])
    import jax

    return dict(res, versions=versions(["mbirjax", "jax", "jaxlib"]), devices=[str(d) for d in jax.devices()])


def _worker_xla_memory(spec):
    """XLA's buffer assignment of `project` and `backproject` per (views, batch size): compile only."""
    import jax
    import jax.numpy as jnp

    from jaxrecon.operators import backproject, project

    n, _, det = spec["memory"]
    rows = []
    for views, bs in spec["cases"]:
        g = cone_geometry(n, views, det)
        x, y = jax.ShapeDtypeStruct(g.shape, jnp.float32), jax.ShapeDtypeStruct(g.sinogram_shape, jnp.float32)
        for direction, fn, arg in (("forward", project, x), ("adjoint", backproject, y)):
            t0 = time.perf_counter()
            m = jax.jit(lambda a, g, fn=fn, bs=bs: fn(a, g, batch_size=bs)).lower(arg, g).compile().memory_analysis()
            sizes = {k: getattr(m, f"{k}_size_in_bytes") / MiB for k in ("temp", "argument", "output", "alias")}
            rows.append(dict(direction=direction, views=views, batch_size=bs, compile_seconds=time.perf_counter() - t0,
                             total=sizes["temp"] + sizes["argument"] + sizes["output"], **sizes))
    return dict(spec, rows=rows)


def _worker_rss(spec):
    """Peak RSS of one real run of `project` or `backproject` at the default batch size, in this process."""
    import jax
    import jax.numpy as jnp

    from jaxrecon.operators import backproject, project

    n, _, det = spec["memory"]
    g = cone_geometry(n, spec["views"], det)
    after_import = peak_rss_mb()  # imports and the geometry
    forward = spec["direction"] == "forward"
    arg = jnp.ones(g.shape if forward else g.sinogram_shape, jnp.float32)
    fn = jax.jit(lambda a, g: (project if forward else backproject)(a, g))
    t0 = time.perf_counter()
    compiled = fn.lower(arg, g).compile()
    compile_s = time.perf_counter() - t0
    before_run = peak_rss_mb()
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(arg, g))
    run_s = time.perf_counter() - t0
    return dict(spec, compile_seconds=compile_s, run_seconds=run_s, rss_after_import_mb=after_import,
                peak_rss_before_run_mb=before_run, peak_rss_mb=peak_rss_mb(), input_mb=arg.nbytes / MiB,
                output_mb=out.nbytes / MiB)


WORKERS = {("fan", "jaxrecon"): _worker_fan_jaxrecon, ("fan", "astra"): _worker_fan_astra,
           ("cone", "jaxrecon"): _worker_cone_jaxrecon, ("cone", "mbirjax"): _worker_cone_mbirjax,
           ("xla", "jaxrecon"): _worker_xla_memory, ("rss", "jaxrecon"): _worker_rss}


def _worker(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return WORKERS[spec["part"], spec["library"].split(" ")[0]](spec)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def _run(spec, python=sys.executable):
    label = f"{spec['part']} {spec['library']} " + " ".join(f"{k}={spec[k]}" for k in ("n", "views", "direction") if k in spec)
    print(f"{time.strftime('%H:%M:%S')} {label} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    res = run_worker([python, os.path.abspath(__file__), "--worker", json.dumps(spec)], label=label)
    print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return res


def _compare(row, scratch, tag, ours_tag):
    for direction in ("forward", "adjoint"):
        row[f"rel_diff_{direction}"] = _rel(np.load(scratch / f"{tag}_{direction}.npy"),
                                            np.load(scratch / f"{ours_tag}_{direction}.npy"))


def run_fan(cfg, peers, scratch):
    rows = []
    for n in cfg["fan"]:
        ours = _run(dict(part="fan", library="jaxrecon", n=n, views=n, repeats=cfg["fan_repeats"], scratch=str(scratch)))
        rows.append(ours)
        if "astra" in peers:
            for projector in ASTRA_FAN:
                row = _run(dict(part="fan", library=f"astra {projector}", n=n, views=n, repeats=cfg["fan_repeats"],
                                num_detectors=ours["num_detectors"], scratch=str(scratch)))
                _compare(row, scratch, f"fan{n}_{projector}", f"fan{n}_jaxrecon")
                rows.append(row)
    return rows


def run_cone(cfg, peers, scratch, mbirjax_python):
    rows = []
    for n, views, det, repeats in cfg["cone"]:
        spec = dict(part="cone", n=n, views=views, det=det, repeats=repeats, scratch=str(scratch))
        rows.append(_run(dict(spec, library="jaxrecon")))
        if "mbirjax" in peers:
            row = _run(dict(spec, library="mbirjax"), mbirjax_python)
            _compare(row, scratch, f"cone{n}_mbirjax", f"cone{n}_jaxrecon")
            rows.append(row)
    return rows


def run_memory(cfg, default):
    """XLA's analysis at each batch size (all views) and at `default` (cone_project's default) for each view
    count; then one real run of each direction at `default`."""
    views = cfg["memory"][1]
    cases = [(views, bs) for bs in sorted({*cfg["batch_sizes"], default})]
    cases += [(v, default) for v in cfg["view_counts"] if v != views]
    xla = _run(dict(part="xla", library="jaxrecon", memory=cfg["memory"], cases=cases))["rows"]
    rss = [_run(dict(part="rss", library="jaxrecon", memory=cfg["memory"], direction=d, views=v, batch_size=default))
           for d, v in zip(("forward", "adjoint"), cfg["rss_views"])]
    return dict(xla=xla, rss=rss)


def speedups(rows, baseline="jaxrecon"):
    """`{n: {peer: {forward, adjoint}}}`: peer median / jaxrecon median (> 1: jaxrecon is faster)."""
    out = {}
    for n in sorted({r["n"] for r in rows}):
        by = {r["library"]: r["results"] for r in rows if r["n"] == n}
        out[n] = {lib: {d: res[d]["seconds"] / by[baseline][d]["seconds"] for d in ("forward", "adjoint")}
                  for lib, res in by.items() if lib != baseline}
    return out


def checks(data):
    out = []
    for n, peers in data.get("fan_speedups", {}).items():
        for lib, s in peers.items():
            worst = min(s.values())
            out.append(dict(claim=f"fan N={n}: jaxrecon >= 3x faster than ASTRA {lib.split(' ')[1]} (forward and adjoint)",
                            passed=worst >= 3, detail=f"forward {s['forward']:.2f}x, adjoint {s['adjoint']:.2f}x"))
    mem, default_bs = data.get("memory"), data["settings"]["default_batch_size"]
    if mem:
        for d in ("forward", "adjoint"):
            rows = [r for r in mem["xla"] if r["direction"] == d and r["views"] % r["batch_size"] == 0]
            if d == "adjoint":  # the gather adjoint runs one view at a time: flat in views and in batch_size
                flat = max(r["temp"] for r in rows) <= 1.05 * min(r["temp"] for r in rows) + 1
                out.append(dict(claim="adjoint: XLA scratch grows with neither the number of views nor the batch size",
                                passed=flat, detail=", ".join(f"{r['temp']:.1f} MiB ({r['views']} views, batch "
                                                              f"{r['batch_size']})" for r in rows)))
                continue
            default = sorted((r for r in rows if r["batch_size"] == default_bs), key=lambda r: r["views"])
            by_bs = sorted((r for r in rows if r["views"] == max(r["views"] for r in rows)), key=lambda r: r["batch_size"])
            flat = len(default) > 1 and abs(default[-1]["temp"] - default[0]["temp"]) <= 0.05 * default[0]["temp"] + 1
            grows = all(a["temp"] < b["temp"] for a, b in zip(by_bs, by_bs[1:]))
            temps = lambda rs: ", ".join(f"{r['temp']:.1f}" for r in rs)
            out.append(dict(claim=f"{d}: XLA scratch grows with the view batch, not with the number of views "
                                  "(view counts that are multiples of the batch)",
                            passed=flat and grows,
                            detail=f"temp {temps(by_bs)} MiB for batch {', '.join(str(r['batch_size']) for r in by_bs)}; "
                                   f"{temps(default)} MiB for {', '.join(str(r['views']) for r in default)} views "
                                   f"at batch {default_bs}"))
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _ms(r, d):
    return f"{r['results'][d]['seconds'] * 1e3:.1f}"


def _speed_rows(rows, ms_per_view):
    table = []
    for r in rows:
        res = r["results"]
        comp = "/".join(f"{res[d]['compile_seconds']:.1f}" for d in ("forward", "adjoint")) if "compile_seconds" in res["forward"] else "-"
        cores = "/".join(f"{res[d]['cpu_seconds'] / max(res[d]['seconds'], 1e-12):.1f}" for d in ("forward", "adjoint"))
        diff = "/".join(f"{r[f'rel_diff_{d}']:.4f}" for d in ("forward", "adjoint")) if "rel_diff_forward" in r else "(reference)"
        per_view = [f"{res[d]['seconds'] * 1e3 / r['views']:.{ms_per_view}f}" for d in ("forward", "adjoint")]
        table.append([r["n"], r["views"], r["library"], _ms(r, "forward"), _ms(r, "adjoint"), *per_view, cores, comp,
                      diff, f"{r['dot_test']:.1e}", f"{r['peak_rss_mb']:.0f}"])
    return table


SPEED_HEADER = ["size", "views", "library", "forward ms", "adjoint ms", "forward ms/view", "adjoint ms/view",
                "cores (fwd/adj)", "compile s (fwd/adj)", "rel. diff to jaxrecon (fwd/adj)", "dot test", "peak RSS MiB"]


def markdown(data) -> str:
    meta = data["meta"]
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    lines = ["# Fan- and cone-beam projectors against peers", "",
             f"`{meta['command']}` on {meta['machine']['cpu_count']} CPU cores ({meta['machine']['device']}), "
             f"{meta['machine']['date']}, {meta['wall_minutes']:.1f} min; {vers}. Load average (1/5/15 min) "
             f"{'/'.join(f'{v:.1f}' for v in meta['load_average_before'])} before, "
             f"{'/'.join(f'{v:.1f}' for v in meta['load_average_after'])} after: the machine was shared, so "
             "absolute times are noisy and the ratios (measured in the same run) are the result.", "",
             "Times: median of repeated calls after a warm-up call, float32; compile time (first call minus median) "
             "apart. Cores: CPU time / wall time of the worker process. Rel. diff: ||peer - jaxrecon|| / ||jaxrecon|| "
             "on the same input (forward: the phantom; adjoint: jaxrecon's projection of it). Dot test: "
             "|<Ax, y> - <x, A^T y>| / |<Ax, y>| of that library's own pair. Speed-up: peer time / jaxrecon time "
             "(> 1: jaxrecon is faster).", ""]
    for c in data["checks"]:
        lines.append(f"- {verdict(c)}")
    if "fan" in data:
        lines += ["", "## Fan beam (2D) against ASTRA CPU", "",
                  "N x N asymmetric ellipse phantom, N views over 2 pi, source at 2N, flat detector at N, bins 1.5 apart, "
                  "the fewest bins that see the circumscribed circle (jaxrecon's default; ASTRA gets the same count).", ""]
        lines += markdown_table(SPEED_HEADER, _speed_rows(data["fan"], 3))
        lines += ["", "Speed-up of jaxrecon (ASTRA time / jaxrecon time):", ""]
        lines += markdown_table(["N", "ASTRA projector", "forward", "adjoint"], [
            [n, lib.split(" ")[1], f"{s['forward']:.2f}x", f"{s['adjoint']:.2f}x"]
            for n, peers in data["fan_speedups"].items() for lib, s in peers.items()])
    if "cone" in data:
        lines += ["", "## Cone beam (3D) against mbirjax", "",
                  "n^3 asymmetric ellipsoid phantom, views over 2 pi, source at 2n, flat detector at n, pixels 1.6 apart "
                  "(detector " + ", ".join(f"{det} x {det} at n = {n}" for n, _, det, _ in data["settings"]["cone"])
                  + "). Times in ms (per call and per view).", ""]
        lines += markdown_table(SPEED_HEADER, _speed_rows(data["cone"], 1))
        if data["cone_speedups"]:
            lines += ["", "Speed-up of jaxrecon (mbirjax time / jaxrecon time):", ""]
            lines += markdown_table(["n", "forward", "adjoint"], [
                [n, f"{s['forward']:.2f}x", f"{s['adjoint']:.2f}x"] for n, peers in data["cone_speedups"].items()
                for s in peers.values()])
    if "memory" in data:
        n, views, det = data["settings"]["memory"]
        lines += ["", f"## Memory: {n}^3 volume to {views} views of {det} x {det}, float32", "",
                  "XLA's buffer assignment (`jax.jit(...).lower(...).compile().memory_analysis()`, MiB): scratch (temp), "
                  "arguments (volume or projections, and the geometry) and output; total = temp + argument + output. "
                  "Views run in `lax.map(batch_size=...)` chunks; when the views are not a multiple of the batch size "
                  "(marked *), the remainder runs as one more, smaller batch whose buffers add to the scratch.", ""]
        lines += markdown_table(["direction", "views", "batch size", "temp", "argument", "output", "total", "compile s"], [
            [r["direction"], f"{r['views']}{'' if r['views'] % r['batch_size'] == 0 else '*'}", r["batch_size"],
             *(f"{r[k]:.1f}" for k in ("temp", "argument", "output", "total")),
             f"{r['compile_seconds']:.1f}"] for r in data["memory"]["xla"]])
        lines += ["", "Peak resident memory (`VmHWM`, see `harness.peak_rss_mb`) of a fresh process for one real run at the default batch size "
                  f"({data['settings']['default_batch_size']} views), MiB; 'before run' includes the JAX runtime, the input and the compiled executable:", ""]
        lines += markdown_table(["direction", "views run", "input", "output", "after imports", "before run", "peak",
                                 "compile s", "run s"], [
            [r["direction"], f"{r['views']} of {views}", f"{r['input_mb']:.1f}", f"{r['output_mb']:.1f}",
             f"{r['rss_after_import_mb']:.0f}", f"{r['peak_rss_before_run_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
             f"{r['compile_seconds']:.1f}", f"{r['run_seconds']:.1f}"] for r in data["memory"]["rss"]])
    lines += ["", "## Notes", "", *(f"- {note}" for note in data["notes"])]
    return "\n".join(lines) + "\n"


NOTES = [
    "Conventions: ASTRA's `fanflat` is jaxrecon's flat `FanBeamGeometry` angle for angle (tests/operators/"
    "test_fan_beam.py). ASTRA's CPU fan kernels are `line_fanflat` (intersection lengths) and `strip_fanflat` (areas), "
    "jaxrecon's is Joseph's interpolation: the operators agree to discretisation error, not to rounding.",
    "mbirjax's `ConeBeamModel` puts the source at `source_iso_dist` along +y of the view's rotated frame and the "
    "channel axis along its x; with jaxrecon's y flipped this is jaxrecon's `ConeBeamGeometry` at the same angles "
    "(source at R(sin b, -cos b, 0), columns along (cos b, sin b, 0), rows along +z). Checked, not assumed: "
    "the rel. diff column (a flipped axis or reversed angles gave 7-10% at 32^3 and 128^3 during development, "
    "the mapping above 0.1-0.5%). mbirjax's projector is voxel-driven (separable footprints), ours ray-driven (Joseph), "
    "so they agree to discretisation error; its `back_project` is the transpose of its `forward_project` to float32 "
    "rounding (dot test column).",
    "mbirjax 0.7.3 requires jax != 0.10.2, so it runs from its own venv on jax/jaxlib 0.10.1 (a different XLA), "
    "with its CPU default of 2 virtual devices (it shards views/slices across them; `devices` in the JSON). Its "
    "`forward_project`/`back_project` return host NumPy arrays (their documented default), so their times include "
    "the gather to the host; jaxrecon's include `np.asarray` of the result too.",
    "jaxrecon's cone adjoint for circular orbits is the gather-based exact transpose of `cone_beam.py` (two "
    "gathers per view: over detector rows into a (planes, columns, z) array, then over columns per voxel), one view "
    "at a time, so its scratch depends on neither the views nor `batch_size`; `batch_size` is the forward's view "
    "chunk (and that of the scatter adjoint tilted geometries fall back to).",
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for tests")
    p.add_argument("--gpu", action="store_true", help="accelerator sizes: fan 512, 1024; cone 256^3, 512^3")
    p.add_argument("--parts", nargs="+", default=["fan", "cone", "memory"], choices=["fan", "cone", "memory"])
    p.add_argument("--peers", nargs="*", default=["astra", "mbirjax"], choices=["astra", "mbirjax"],
                   help="peers to run (none: jaxrecon only)")
    p.add_argument("--mbirjax-python", help=f"Python of an environment with {MBIRJAX} (default: benchmarks/.venvs/mbirjax, "
                   "made on first use)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        send_result(_worker(json.loads(args.worker)))
        return
    cfg = SMOKE if args.smoke else GPU if args.gpu else FULL
    peers = list(args.peers)
    notes = list(NOTES)
    if "astra" in peers:
        import importlib.util

        if importlib.util.find_spec("astra") is None:
            peers.remove("astra")
            notes.append("ASTRA is not installed here: the fan-beam comparison was skipped.")
    mbirjax_python = None
    if "mbirjax" in peers and "cone" in args.parts:
        mbirjax_python = args.mbirjax_python or peer_python("mbirjax", [[MBIRJAX]])
    start, load_before = time.perf_counter(), os.getloadavg()
    import inspect

    from jaxrecon.operators.cone_beam import cone_project

    default_bs = inspect.signature(cone_project).parameters["batch_size"].default
    data = dict(settings=dict(cfg, peers=peers, default_batch_size=default_bs))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if "fan" in args.parts:
            data["fan"] = run_fan(cfg, peers, scratch)
            data["fan_speedups"] = speedups(data["fan"])
        if "cone" in args.parts:
            data["cone"] = run_cone(cfg, peers, scratch, mbirjax_python)
            data["cone_speedups"] = speedups(data["cone"])
        if "memory" in args.parts:
            data["memory"] = run_memory(cfg, default_bs)
    data["meta"] = dict(command=command(__file__, argv), machine=machine(), load_average_before=load_before,
                        load_average_after=os.getloadavg(), wall_minutes=(time.perf_counter() - start) / 60,
                        versions=versions(("jax", "jaxlib", "astra-toolbox", "numpy")))
    ours = [r["results"][d] for r in data.get("fan", []) + data.get("cone", []) if r["library"] == "jaxrecon"
            for d in ("forward", "adjoint")]
    if ours:
        cores = [t["cpu_seconds"] / t["seconds"] for t in ours]
        notes.append(
            f"Cores: jaxrecon's XLA runs on every core it gets, ASTRA's CPU fan projectors on one. Here jaxrecon's "
            f"workers used {min(cores):.1f}-{max(cores):.1f} cores (CPU time / wall time): the machine was shared "
            "(load average above), so the ratios are for what each library got of it, not for an idle machine.")
    for r in data.get("memory", {}).get("rss", []):
        total = cfg["memory"][1]
        if r["views"] < total:
            notes.append(
                f"The {r['direction']}'s real run projected {r['views']} of the {total} views, to fit the run's time: "
                f"{r['run_seconds']:.0f} s here, so all {total} would take about {r['run_seconds'] * total / r['views'] / 60:.0f} "
                f"min. Its chunks are the same, so its scratch is the same (XLA's analysis above covers all {total} "
                f"views); its {'input' if r['direction'] == 'adjoint' else 'output'} is {r['views']}/{total} of the full size.")
    data["checks"], data["notes"] = checks(data), notes
    md = markdown(data)
    write_results("geometries", data, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
