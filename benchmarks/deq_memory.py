"""Memory and time of ONE training step vs depth: backprop through unrolled iterations vs a DEQ.

One training step = the loss (mean squared error of the reconstructions of a batch) and its
gradient with respect to every weight, jitted. For each number of iterations K in 1, 2, 5, 10, 20,
50, 100 it is measured for

- `unrolled`: the DEGrad map $T(x) = x - \\eta(\\tilde A^*(\\tilde A x - \\tilde y) + x - N_\\theta(x))$
  applied K times by `DEGrad.iterate` (a `lax.scan`, fully unrolled like the unrolled schemes:
  XLA CPU runs convolutions inside while loops slowly; its compile time grows with K) and
  differentiated by backpropagation, which stores the activations of every iteration;
- `deq`: the same DEGrad model as a deep equilibrium model, `max_iter = K` forward Anderson
  iterations with `tol = 0` (so it runs all K) and K backward (adjoint) iterations, differentiated
  implicitly (`jaxrecon.deq.fixed_point`): nothing is stored per iteration;
- optionally (`--schemes ...,lgd`) learned gradient descent with shared weights (a standard
  unrolled network, `lax.scan(unroll=True)`, backprop).

Unrolled and DEQ use the identical network and map, so the difference is the differentiation
alone. Each configuration runs in a fresh subprocess and reports

- XLA's own buffer assignment for the compiled step (`jax.jit(...).lower(...).compile()
  .memory_analysis()`): temp, argument, output bytes; "XLA peak" = argument + output + temp - alias.
  Deterministic, independent of the allocator;
- the process's resident memory: `ru_maxrss` of the whole subprocess (what `/usr/bin/time -v`
  prints; includes compilation) and the high-water mark during execution only (`VmHWM` after
  `malloc_trim` and a reset through `/proc/self/clear_refs`, minus the resident memory before);
- time: median of `--repeats` steps after a warm-up step; compilation timed apart.

CT problem: 64 x 64 images, 30 views, 91 detectors, 5% noise, random ellipses (the quick preset),
batch of `--batch` samples, float32.

    python benchmarks/deq_memory.py                         # full run (2 CPU cores: ~15 minutes)
    python benchmarks/deq_memory.py --smoke --out /tmp/dm   # 16 x 16, K <= 20, a check (< 2 minutes)

Writes deq_memory.json, .md and .png into --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from harness import RESULTS, ROOT, command, environment, fmt, markdown_table, pyplot, run_worker, save_figure
from harness import send_result, write_results

ITERATIONS = (1, 2, 5, 10, 20, 50, 100)
SCHEMES = ("unrolled", "deq", "lgd")
LABELS = {
    "unrolled": "unrolled DEGrad map, backprop (`DEGrad.iterate`)",
    "deq": "DEQ (DEGrad, implicit differentiation)",
    "lgd": "learned gradient descent, shared weights, backprop",
}
MB = 2.0**20
XLA_WORKAROUND = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


# --------------------------------------------------------------------------------------------------
# The worker: one configuration in a fresh process
# --------------------------------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS and reset the kernel's resident high-water mark (VmHWM)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(cfg: dict) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from jaxrecon.deq.schemes import DEGrad
    from jaxrecon.nets.learned_gradient import LearnedGradientDescent
    from jaxrecon.train.data import CTData, batch_keys

    scheme, k = cfg["scheme"], cfg["iterations"]
    data = CTData.uniform(cfg["size"], cfg["num_angles"], cfg["num_detectors"], noise=0.05)
    op = data.operator
    batch = jax.jit(jax.vmap(data.sample))(batch_keys(0, "train", 0, cfg["batch"]))
    key = jax.random.key(0)
    if scheme == "lgd":
        model = LearnedGradientDescent(op, num_iterations=k, shared=True, hidden=cfg["features"], num_memory=5,
                                       init="fbp", last_scale=0.1, key=key)
    else:
        # tol = 0: the DEQ runs exactly max_iter forward and backward_max_iter backward iterations
        model = DEGrad(op, features=cfg["features"], depth=cfg["depth"], solver=cfg["solver"],
                       backward_solver=cfg["solver"], tol=0.0, max_iter=k, backward_max_iter=k, key=key)

    def reconstruct(model, op, y):
        if scheme == "deq":
            sol = model.solve(y, op)
            return sol.z, sol.iterations
        if scheme == "unrolled":
            return model.iterate(y, op, k, unroll=True if cfg["unroll"] == "full" else 1), jnp.asarray(k)
        return model(y, op), jnp.asarray(k)

    def loss_fn(model, op, batch):
        xs, its = jax.vmap(lambda y: reconstruct(model, op, y))(batch.y)
        return jnp.mean((xs - batch.x) ** 2), jnp.min(its)

    params, static = eqx.partition((model, op), eqx.is_array)

    def step(params, batch):
        model, op = eqx.combine(params, static)
        (loss, its), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, op, batch)
        return loss, its, grads

    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, batch).compile()
    compile_seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla = {}
    for name in ("temp", "argument", "output", "alias", "generated_code"):
        value = getattr(mem, f"{name}_size_in_bytes", None) if mem is not None else None
        xla[name] = None if value is None else int(value)
    if xla["temp"] is not None:
        xla["peak"] = xla["argument"] + xla["output"] + xla["temp"] - (xla["alias"] or 0)

    reset = _reset_peak_rss()
    rss_before = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    loss, its, grads = jax.block_until_ready(compiled(params, batch))
    first = time.perf_counter() - t0
    times = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, batch))
        times.append(time.perf_counter() - t0)
    hwm = _proc_status_kb("VmHWM")
    grad_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    return dict(
        scheme=scheme, iterations=k, forward_iterations=int(its), loss=float(loss), grad_norm=grad_norm,
        finite=bool(jnp.isfinite(loss)) and bool(jnp.isfinite(grad_norm)),
        compile_seconds=compile_seconds, first_step_seconds=first, step_seconds=sorted(times)[len(times) // 2],
        xla_bytes=xla,
        rss_max_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        rss_execution_mb=(hwm - rss_before) / 1024 if reset and hwm and rss_before else None,
        rss_before_mb=rss_before / 1024 if rss_before else None,
        num_params=int(sum(a.size for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))),
    )


def run_config(cfg: dict, timeout: float) -> dict:
    """`worker(cfg)` in a fresh process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])))
    # XLA CPU (jax 0.10.2, 2 cores) deadlocks executing the 64 x 64 unrolled step at K = 2 when the
    # operator's geometry arrays are jit arguments (as here): every thread parks, 0% CPU. Turning
    # off the concurrency-optimised scheduler avoids it; closed-over operators are unaffected.
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), XLA_WORKAROUND]))
    return run_worker(cmd, env=env, timeout=timeout, label=f"worker {cfg}")


# --------------------------------------------------------------------------------------------------
# The checks the benchmark exists to show
# --------------------------------------------------------------------------------------------------


def checks(rows: list[dict]) -> list[dict]:
    """DEQ: XLA peak over K >= 10 stays within 1.2x of its value at K = 10 (or the smallest K >= 10).
    Unrolled schemes: XLA peak never decreases with K from K = 10 on and is > 1.2x larger at the
    largest K than at 10."""
    out = []
    for scheme in sorted({r["scheme"] for r in rows}):
        rs = sorted((r for r in rows if r["scheme"] == scheme), key=lambda r: r["iterations"])
        peaks = {r["iterations"]: r["xla_bytes"].get("peak") for r in rs}
        if any(v is None for v in peaks.values()):
            continue
        ref = min((k for k in peaks if k >= 10), default=None)
        kmax = max(peaks)
        if ref is None or ref == kmax:
            continue
        ratio = peaks[kmax] / peaks[ref]
        if scheme == "deq":
            worst = max(peaks[k] for k in peaks if k >= ref) / peaks[ref]
            out.append(dict(scheme=scheme, claim=f"XLA peak at K >= {ref} within 1.2x of K = {ref}",
                            value=worst, passed=worst <= 1.2))
        else:
            # from K = ref on: below it XLA's buffer assignment moves by ~1% either way (73.2 -> 72.7 MB, K = 1 -> 2)
            ks = sorted(k for k in peaks if k >= ref)
            monotone = all(peaks[a] <= peaks[b] for a, b in zip(ks, ks[1:]))
            out.append(dict(scheme=scheme, claim=f"XLA peak grows with K (K = {kmax} vs {ref}: > 1.2x, never "
                            f"decreasing from K = {ref} on)", value=ratio, passed=monotone and ratio > 1.2))
    return out


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _mb(v):
    return "" if v is None else f"{v / MB:.1f}"


def markdown(meta: dict, rows: list[dict], verdicts: list[dict]) -> str:
    c = meta["config"]
    lines = [
        "# Memory and time of one training step: unrolled backprop vs deep equilibrium",
        "",
        f"`{meta['command']}` on {meta['device_kind']} ({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, "
        f"{meta['date']}; whole run {meta['total_seconds'] / 60:.1f} min.",
        "",
        f"One step = MSE loss of a batch of {c['batch']} and its gradient (jitted), {c['size']} x {c['size']} "
        f"images, {c['num_angles']} views, {c['num_detectors']} detectors, float32. DEGrad: LipschitzCNN with "
        f"{c['features']} features, depth {c['depth']}; unrolled: `lax.scan` "
        f"{'fully unrolled' if c['unroll'] == 'full' else 'as a while loop'}; DEQ with {c['solver']} forward and "
        f"backward, tol = 0 (runs all K iterations each way). Every row is a fresh process (XLA_FLAGS={XLA_WORKAROUND}: it avoids an XLA CPU deadlock). XLA peak = argument + output + temp "
        "- alias bytes of the compiled step (`memory_analysis()`); RSS max = `ru_maxrss` of the process "
        "(compilation included); RSS exec = rise of resident memory during the steps alone; times: median "
        f"of {c['repeats']} steps after a warm-up, compilation apart.",
        "",
    ]
    lines += markdown_table(
        ["scheme", "K", "forward its", "XLA temp (MB)", "XLA peak (MB)", "RSS max (MB)", "RSS exec (MB)", "step (s)",
         "compile (s)"],
        [[r["scheme"], r["iterations"], r["forward_iterations"], _mb(r["xla_bytes"].get("temp")),
          _mb(r["xla_bytes"].get("peak")), f"{r['rss_max_mb']:.0f}", fmt(r["rss_execution_mb"], "{:.0f}", ""),
          f"{r['step_seconds']:.3f}", f"{r['compile_seconds']:.1f}"] for r in rows])
    lines += ["", "Checks:", ""]
    for v in verdicts:
        lines.append(f"- {'PASS' if v['passed'] else 'FAIL'}: {LABELS[v['scheme']]}: {v['claim']} "
                     f"(ratio {v['value']:.2f})")
    lines += ["", "Schemes: " + "; ".join(f"`{s}` = {LABELS[s]}" for s in sorted({r['scheme'] for r in rows}))]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.4))
    for scheme in sorted({r["scheme"] for r in rows}):
        rs = sorted((r for r in rows if r["scheme"] == scheme), key=lambda r: r["iterations"])
        ks = [r["iterations"] for r in rs]
        axes[0].plot(ks, [r["xla_bytes"]["peak"] / MB for r in rs], "o-", label=f"{scheme} (XLA)")
        axes[0].plot(ks, [r["rss_max_mb"] for r in rs], "x:", label=f"{scheme} (max RSS)")
        axes[1].plot(ks, [r["step_seconds"] for r in rs], "o-", label=scheme)
    axes[0].set(xscale="log", yscale="log", xlabel="iterations K", ylabel="MB", title="peak memory of one step")
    axes[1].set(xscale="log", yscale="log", xlabel="iterations K", ylabel="seconds", title="time of one step")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="16 x 16 images, K in (2, 10, 20), 1 repeat: a check")
    ap.add_argument("--schemes", default="unrolled,deq", help=f"comma-separated, from {SCHEMES}")
    ap.add_argument("--iterations", default=None, help="comma-separated K values (default 1,2,5,10,20,50,100)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--num-angles", type=int, default=30)
    ap.add_argument("--num-detectors", type=int, default=None, help="default ceil(sqrt(2) size)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--solver", default="anderson", choices=("anderson", "fixed_point", "broyden"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unroll", choices=("full", "none"), default="full",
                    help="unrolled scheme: lax.scan(unroll=True), the unrolled schemes' default, or a while loop")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        send_result(worker(json.loads(args.worker)))
        return

    schemes = [s for s in args.schemes.split(",") if s]
    if not schemes or set(schemes) - set(SCHEMES):
        ap.error(f"--schemes expects some of {SCHEMES}, got {args.schemes!r}")
    if args.smoke:
        args.size, args.features, args.depth, args.repeats = 16, 8, 3, 1
        ks = (2, 10, 20)
    else:
        ks = ITERATIONS
    if args.iterations:
        try:
            ks = tuple(int(k) for k in args.iterations.split(","))
        except ValueError:
            ap.error(f"--iterations expects comma-separated positive ints, got {args.iterations!r}")
        if min(ks) < 1:
            ap.error(f"--iterations expects positive ints, got {args.iterations!r}")
    num_detectors = args.num_detectors or int(-(-args.size * 2**0.5 // 1))
    config = dict(size=args.size, num_angles=args.num_angles, num_detectors=num_detectors, batch=args.batch,
                  features=args.features, depth=args.depth, solver=args.solver, repeats=args.repeats,
                  unroll=args.unroll)

    start = time.perf_counter()
    rows = []
    for scheme in schemes:
        for k in ks:
            row = run_config(dict(config, scheme=scheme, iterations=k), args.timeout)
            rows.append(row)
            peak = row["xla_bytes"].get("peak")
            print(f"{scheme:9s} K={k:4d}: XLA peak {_mb(peak)} MB, max RSS {row['rss_max_mb']:.0f} MB, "
                  f"step {row['step_seconds']:.3f} s (compile {row['compile_seconds']:.1f} s), "
                  f"forward its {row['forward_iterations']}", flush=True)
    verdicts = checks(rows)
    for v in verdicts:
        print(f"{'PASS' if v['passed'] else 'FAIL'}: {v['scheme']}: {v['claim']} (ratio {v['value']:.2f})")

    meta = dict(config=config, command=command(__file__, argv), **environment(),
                total_seconds=time.perf_counter() - start, smoke=args.smoke)
    stem = Path(args.out) / "deq_memory"
    write_results(stem.name, dict(meta=meta, rows=rows, checks=verdicts), markdown(meta, rows, verdicts), stem.parent)
    figure(rows, stem.with_suffix(".png"))
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()
