"""Iterate more: an unrolled network run past its training depth vs a deep equilibrium model.

Gilton, Ongie & Willett ("Deep equilibrium architectures for inverse problems in imaging", IEEE
TCI 2021) observe that an unrolled network trained for K iterations degrades when run for more,
while a DEQ, trained at its fixed point, keeps its quality however long it iterates. Here, on the
quick CT problem (64 x 64, 30 views, 91 detectors, 5% noise, random ellipses, no inverse crime):

- unrolled: learned gradient descent with ONE set of weights shared by its K = 10 iterations
  (`LearnedGradientDescent(shared=True)`, width 32, 5 memory channels, from FBP), so the same
  iteration can be applied any number of times; or, with `--unrolled degrad`, the DEGrad map
  trained by backprop through K applications (`DEGrad.iterate`);
- DEQ: `DEGrad` (LipschitzCNN regulariser, 32 features, depth 4, Lipschitz 0.9; Anderson forward
  and backward), trained at its fixed point by implicit differentiation.

Both train with Adam (cosine decay, clipping) for `--steps` steps of batch `--batch` on fresh random
ellipses, then run k = 1..100 iterations on Shepp-Logan and on 16 test ellipses (PSNR curves, and a
row of iterates per method as in Gilton et al.'s figure). For the DEQ "iteration k" is the k-th
application of its fixed-point map $T$ from the same starting image (CGLS, 5 steps); its Anderson
fixed point (the reconstruction it was trained for) is shown as a line.

Checks: (1) from its convergence point on ($\\|x_k - x_{k-1}\\| \\le 10^{-3}\\|x_k\\|$) the DEQ's
Shepp-Logan and test PSNR stay within 0.5 dB of their best over all k; (2) the unrolled network's
PSNR at 100 iterations is more than 0.5 dB below its PSNR at K.

    python benchmarks/iterate_more.py                          # --steps 1000: ~30-60 min on 2 CPU cores
    python benchmarks/iterate_more.py --smoke --out /tmp/im    # 32 x 32, 20 steps: a check

Writes iterate_more.json, .md, .png (PSNR curves) and iterate_more_iterates.png into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from harness import RESULTS, command, environment, fmt, markdown_table, pyplot, save_figure, verdict, write_results
from jaxrecon.deq.schemes import DEGrad
from jaxrecon.metrics.quality import psnr
from jaxrecon.nets._scheme import initial_reconstruction
from jaxrecon.nets.learned_gradient import LearnedGradientDescent
from jaxrecon.train.data import CTData, batch_keys, shepp_logan_sample
from jaxrecon.train.loop import default_optimizer, fit, reconstruction_loss_fn

CONVERGED = 1e-3  # relative step ||x_k - x_{k-1}|| / ||x_k|| that counts as converged
TOLERANCE_DB = 0.5
SHOW = (1, 2, 5, 10, 20, 50, 100)  # iterates shown in the figure row


# --------------------------------------------------------------------------------------------------
# Models and their iterates
# --------------------------------------------------------------------------------------------------


class UnrolledDEGrad(eqx.Module):
    """The DEGrad map applied exactly `num_iterations` times (`DEGrad.iterate`), trained by backprop."""

    deq: DEGrad
    num_iterations: int = eqx.field(static=True)

    def __call__(self, y, op):
        return self.deq.iterate(y, op, self.num_iterations, unroll=True)


def lgd_start(model: LearnedGradientDescent, y, op):
    dtype = jnp.real(y).dtype
    x = initial_reconstruction(y, op, model.init).astype(dtype)
    return x, jnp.zeros((model.num_memory, *op.in_shape), dtype)


def lgd_step(model: LearnedGradientDescent, carry, y, op):
    """One iteration of `LearnedGradientDescent.__call__` with its shared block (the same code)."""
    x, s = carry
    scale = 1 / jax.lax.stop_gradient(model.op_norm)
    grad = jnp.real(op.T(op(x) - y)) * scale**2
    update = model.blocks(jnp.concatenate([x[None], grad[None], s]))
    return x + update[0], jax.nn.relu(update[1:])


@eqx.filter_jit
def _lgd_advance(model, op, carry, ys, length):
    def one(carry, y):
        def body(c, _):
            c = lgd_step(model, c, y, op)
            return c, c[0]

        return jax.lax.scan(body, carry, None, length=length, unroll=True)  # conv outside while loops

    return jax.vmap(one, out_axes=(0, 1))(carry, ys)


def lgd_iterates(model, op, ys, num, chunk=10):
    """Iterates x_1..x_num of a shared-weight LGD for every y: `(num, N, H, W)` (chunks of `chunk`
    unrolled steps, one compilation)."""
    carry = jax.vmap(lambda y: lgd_start(model, y, op))(ys)
    out = []
    for done in range(0, num, chunk):
        carry, xs = _lgd_advance(model, op, carry, ys, min(chunk, num - done))
        out.append(xs)
    return jnp.concatenate(out)


@eqx.filter_jit
def _map_iterates(model, op, ys, num):
    return jax.vmap(lambda y: model.iterate(y, op, num, return_all=True), out_axes=1)(ys)


def iterates(name, model, op, ys, num):
    if name == "lgd":
        return lgd_iterates(model, op, ys, num)
    deq = model.deq if isinstance(model, UnrolledDEGrad) else model
    return _map_iterates(deq, op, ys, num)


@eqx.filter_jit
def _fixed_points(model, op, ys):
    sol = jax.vmap(lambda y: model.solve(y, op))(ys)
    return sol.z, sol.iterations, sol.converged


@jax.jit
def _psnr_curve(xs, refs):  # xs (K, N, H, W), refs (N, H, W) -> (K, N); data range of each reference
    return jax.vmap(jax.vmap(psnr))(xs, jnp.broadcast_to(refs, xs.shape))


# --------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------


def build(name, op, args, key):
    if name == "lgd":
        return LearnedGradientDescent(op, num_iterations=args.K, shared=True, hidden=args.width, num_memory=5,
                                      init="fbp", last_scale=0.1, key=key)
    deq = DEGrad(op, features=args.width, depth=args.depth, lipschitz=args.lipschitz, tol=args.tol,
                 max_iter=args.max_iter, key=key)
    return deq if name == "deq" else UnrolledDEGrad(deq, args.K)


def convergence_point(xs):
    """First k (1-based) from which ||x_k - x_{k-1}|| <= CONVERGED ||x_k|| holds for all later k, or None."""
    x = np.asarray(xs, np.float64)  # (K, N, H, W)
    steps = np.linalg.norm((x[1:] - x[:-1]).reshape(len(x) - 1, x.shape[1], -1), axis=-1)
    norms = np.linalg.norm(x[1:].reshape(len(x) - 1, x.shape[1], -1), axis=-1)
    ok = np.all(steps <= CONVERGED * norms, axis=1)  # all samples, iterate k = index + 2
    for i in range(len(ok)):
        if ok[i:].all():
            return i + 2
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="32 x 32, 20 steps, width 8, 30 iterations: a check")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of each model")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--K", type=int, default=10, help="iterations the unrolled network is trained with")
    ap.add_argument("--unrolled", choices=("lgd", "degrad"), default="lgd")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--num-angles", type=int, default=30)
    ap.add_argument("--num-detectors", type=int, default=None, help="default ceil(sqrt(2) size)")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--width", type=int, default=32, help="hidden channels of both networks")
    ap.add_argument("--depth", type=int, default=4, help="layers of the DEQ's LipschitzCNN")
    ap.add_argument("--lipschitz", type=float, default=0.9, help="Lip(N) of the DEQ's LipschitzCNN (< 1)")
    ap.add_argument("--tol", type=float, default=1e-4, help="DEQ forward/backward tolerance")
    ap.add_argument("--max-iter", type=int, default=50, help="DEQ forward/backward iterations at most")
    ap.add_argument("--iterations", type=int, default=100, help="evaluate k = 1..this")
    ap.add_argument("--num-test", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.steps, args.width, args.depth, args.iterations, args.num_test = 32, 20, 8, 3, 30, 4
    if args.K < 1 or args.iterations <= args.K or args.steps < 1:
        ap.error(f"need --K >= 1, --iterations > --K and --steps >= 1, got K={args.K}, iterations={args.iterations}, "
                 f"steps={args.steps}")
    start = time.perf_counter()
    num_detectors = args.num_detectors or int(-(-args.size * 2**0.5 // 1))
    data = CTData.uniform(args.size, args.num_angles, num_detectors, noise=args.noise)
    op = data.operator
    sample = jax.jit(jax.vmap(data.sample))
    sl = shepp_logan_sample(data)
    test = sample(batch_keys(args.seed, "test", 0, args.num_test))
    ys = jnp.concatenate([sl.y[None], test.y])  # sample 0: Shepp-Logan
    refs = jnp.concatenate([sl.x[None], test.x])

    def batch_fn(k):
        return sample(batch_keys(args.seed, "train", k * args.batch, args.batch))

    names = (args.unrolled, "deq")
    key = jax.random.key(args.seed)
    results, recon = {}, {}
    for name in names:
        model = build(name, op, args, key)
        t0 = time.perf_counter()
        res = fit(model, reconstruction_loss_fn(op), batch_fn, default_optimizer(args.lr, num_steps=args.steps),
                  args.steps, progress=not args.no_progress)
        train_seconds = time.perf_counter() - t0
        model = res.model
        xs = iterates(name, model, op, ys, args.iterations)  # (iterations, 1 + num_test, H, W)
        if name == "lgd":  # the replicated iteration is the network's own at k = K
            own = eqx.filter_jit(lambda m, y: m(y, op))(model, ys[0])
            err = float(jnp.max(jnp.abs(own - xs[args.K - 1, 0])) / jnp.max(jnp.abs(own)))
            if not err < 1e-4:
                raise RuntimeError(f"lgd_iterates does not reproduce LearnedGradientDescent at K: {err:.2e}")
        curve = np.asarray(_psnr_curve(xs, refs), np.float64)  # (iterations, 1 + num_test)
        row = dict(train_seconds=train_seconds, compile_seconds=float(sum(res.history["compile_seconds"])),
                   loss=res.history["loss"][:: max(1, len(res.history["loss"]) // 200)],
                   psnr_shepp_logan=curve[:, 0].tolist(), psnr_test=curve[:, 1:].mean(axis=1).tolist())
        if name == "deq":
            z, its, conv = _fixed_points(model, op, ys)
            fp = np.asarray(jax.vmap(psnr)(z, refs), np.float64)
            row.update(fixed_point_psnr_shepp_logan=float(fp[0]), fixed_point_psnr_test=float(fp[1:].mean()),
                       fixed_point_iterations=np.asarray(its).tolist(), fixed_point_converged=np.asarray(conv).tolist(),
                       convergence_point=convergence_point(xs), step=float(model.step))
            recon["deq_fixed_point"] = np.asarray(z[0])
        results[name] = row
        recon[name] = np.asarray(xs[:, 0])
        print(f"{name}: trained {args.steps} steps in {train_seconds:.0f} s; Shepp-Logan PSNR at k = 1, K, "
              f"{args.iterations}: {curve[0, 0]:.2f}, {curve[args.K - 1, 0]:.2f}, {curve[-1, 0]:.2f} dB", flush=True)

    verdicts = checks(results, args)
    for v in verdicts:
        print(verdict(v))
    meta = dict(command=command(__file__, argv), args=vars(args), num_detectors=num_detectors, **environment(),
                total_seconds=time.perf_counter() - start)
    stem = Path(args.out) / "iterate_more"
    write_results(stem.name, dict(meta=meta, results=results, checks=verdicts), markdown(meta, results, verdicts),
                  stem.parent)
    figures(results, recon, np.asarray(sl.x), args, stem)
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {stem}.json/.md/.png, {stem}_iterates.png")


def checks(results, args):
    out = []
    deq = results["deq"]
    k0 = deq["convergence_point"]
    for which in ("shepp_logan", "test"):
        curve = np.asarray(deq[f"psnr_{which}"])
        best = float(np.max(curve))
        if k0 is None:
            out.append(dict(claim=f"DEQ {which} PSNR within {TOLERANCE_DB} dB of its best from convergence on",
                            passed=False, detail=f"the map's iterates did not converge (relative step <= "
                            f"{CONVERGED}) within {args.iterations} iterations"))
            continue
        after = curve[k0 - 1:]
        worst = float(np.min(after))
        out.append(dict(claim=f"DEQ {which} PSNR within {TOLERANCE_DB} dB of its best from convergence on",
                        passed=best - worst <= TOLERANCE_DB,
                        detail=f"converged at k = {k0}; best over all k {best:.2f} dB (at k = {int(np.argmax(curve)) + 1}), "
                        f"from k = {k0}: {worst:.2f} to {float(np.max(after)):.2f} dB"))
    name = args.unrolled
    for which in ("shepp_logan", "test"):
        curve = np.asarray(results[name][f"psnr_{which}"])
        at_k, last = float(curve[args.K - 1]), float(curve[-1])
        dropped = (not np.isfinite(last)) or last < at_k - TOLERANCE_DB
        out.append(dict(claim=f"unrolled ({name}) {which} PSNR drops by > {TOLERANCE_DB} dB from k = K = {args.K} to "
                        f"k = {args.iterations}", passed=bool(dropped),
                        detail=f"{at_k:.2f} dB at K, {last:.2f} dB at {args.iterations}"))
    return out


def markdown(meta, results, verdicts) -> str:
    a = meta["args"]
    name = a["unrolled"]
    label = {"lgd": f"learned gradient descent, shared weights, K = {a['K']}",
             "degrad": f"DEGrad map unrolled K = {a['K']} times (backprop)"}[name]
    deq = results["deq"]
    ks = [k for k in (1, 2, 5, a["K"], 2 * a["K"], 50, a["iterations"]) if k <= a["iterations"]]
    ks = sorted(set(ks))
    lines = [
        "# Iterate more: unrolled network vs deep equilibrium model",
        "",
        f"`{meta['command']}` on {meta['device_kind']} ({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, "
        f"{meta['date']}; whole run {meta['total_seconds'] / 60:.1f} min.",
        "",
        f"CT: {a['size']} x {a['size']}, {a['num_angles']} views, {meta['num_detectors']} detectors, "
        f"{100 * a['noise']:g}% noise, exact sinograms of random ellipses. Training budget: {a['steps']} Adam steps "
        f"(lr {a['lr']:g}, cosine decay) of batch {a['batch']} for each model. Unrolled: {label}. DEQ: DEGrad, "
        f"LipschitzCNN width {a['width']}, depth {a['depth']}, Lipschitz {a['lipschitz']}, Anderson (tol {a['tol']:g}, at most {a['max_iter']} "
        f"iterations).",
        "",
    ]
    table = []
    for n in (name, "deq"):
        r = results[n]
        for which, title in (("shepp_logan", "Shepp-Logan"), ("test", f"test ellipses ({a['num_test']})")):
            c = r[f"psnr_{which}"]
            table.append([f"{n}, {title}", f"{r['train_seconds']:.0f}", *(f"{c[k - 1]:.2f}" for k in ks),
                          fmt(r.get(f"fixed_point_psnr_{which}"), missing="")])
    lines += markdown_table(["model", "training (s)", *(f"k = {k}" for k in ks), "fixed point"], table)
    lines += [
        "",
        f"PSNR in dB after k iterations. DEQ: k-th application of its map; its Anderson fixed point in the last "
        f"column (forward iterations per sample: {deq['fixed_point_iterations']}); the map's iterates converge "
        f"(relative step <= {CONVERGED:g} for every sample from then on) at k = {deq['convergence_point']}; learned "
        f"step eta = {deq['step']:.3f}.",
        "",
        "Checks:",
        "",
    ]
    lines += [f"- {verdict(v)}" for v in verdicts]
    return "\n".join(lines) + "\n"


def figures(results, recon, truth, args, stem):
    plt = pyplot()
    name = args.unrolled
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = np.arange(1, args.iterations + 1)
    for ax, which, title in ((axes[0], "shepp_logan", "Shepp-Logan"), (axes[1], "test", "test ellipses (mean)")):
        ax.plot(ks, results[name][f"psnr_{which}"], label=f"unrolled ({name}, trained K = {args.K})")
        ax.plot(ks, results["deq"][f"psnr_{which}"], label="DEQ (DEGrad): k-th map iterate")
        ax.axhline(results["deq"][f"fixed_point_psnr_{which}"], color="C1", ls=":", label="DEQ fixed point")
        ax.axvline(args.K, color="gray", ls="--", lw=0.8)
        if results["deq"]["convergence_point"]:
            ax.axvline(results["deq"]["convergence_point"], color="C1", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel="iterations k", ylabel="PSNR (dB)", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, stem.with_suffix(".png"), dpi=120)

    show = [k for k in SHOW if k <= args.iterations]
    fig, axes = plt.subplots(2, len(show) + 1, figsize=(1.9 * (len(show) + 1), 4.2))
    for row, (n, title) in enumerate(((name, f"unrolled ({name})"), ("deq", "DEQ"))):
        curve = results[n]["psnr_shepp_logan"]
        for col, k in enumerate(show):
            ax = axes[row, col]
            ax.imshow(recon[n][k - 1], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}, k = {k}\n{curve[k - 1]:.1f} dB", fontsize=7)
            ax.axis("off")
        ax = axes[row, -1]
        if n == "deq":
            ax.imshow(recon["deq_fixed_point"], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"DEQ fixed point\n{results['deq']['fixed_point_psnr_shepp_logan']:.1f} dB", fontsize=7)
        else:
            ax.imshow(truth, cmap="gray", vmin=0, vmax=1)
            ax.set_title("truth", fontsize=7)
        ax.axis("off")
    save_figure(fig, str(stem) + "_iterates.png", dpi=120)


if __name__ == "__main__":
    main()
