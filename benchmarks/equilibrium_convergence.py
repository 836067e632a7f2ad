r"""Convergence of equilibrium regularisation as the noise vanishes.

The equilibrium solution $x_\alpha^\delta$ solves

$$ A^*(Ax - y^\delta) + \alpha\, G(x) = 0, \qquad \|y^\delta - Ax^\dagger\| = \delta . $$

**The regulariser.** $G(x) = x - N(x)$ with $N$ a `LipschitzCNN` (spectrally normalised, exact
bound $\mathrm{Lip}(N) \le L = 0.9$; random weights scaled up so that every layer sits at its bound,
i.e. as non-linear as the bound allows: a fixed "learned-like" network). Then $G$ is strongly
monotone, $\langle G(a) - G(b), a - b\rangle \ge (1 - L)\|a - b\|^2$, and $(1 + L)$-Lipschitz: the
setting of Obmann & Haltmeier's convergence analysis of equilibrium methods, in which the
solution exists, is unique and stable, and converges to the $G$-selected solution of $Ax = y$ as
$\delta \to 0$ whenever $\alpha(\delta) \to 0$ and $\delta^2/\alpha(\delta) \to 0$.

**A rate under a source condition.** If $G(x^\dagger) = A^* w$, taking the inner product of the
equation's difference with $e = x_\alpha^\delta - x^\dagger$ gives
$\|Ae\|^2 + \alpha\mu\|e\|^2 \le (\delta + \alpha\|w\|)\|Ae\|$ with $\mu = 1 - L$, hence

$$ \|x_\alpha^\delta - x^\dagger\| \le \frac{\delta + \alpha\|w\|}{2\sqrt{\alpha\mu}}
   = O(\sqrt\delta) \quad\text{for } \alpha \propto \delta . $$

**Experiments** (CT, `--size`^2 pixels, 30 views, float64, `--seeds` noise draws per level):

1. "source": the truth $x^\dagger$ solving $x - N(x) = A^*w$, $w = A s/\|A\|^2$ ($s$ = Shepp-Logan),
   so the source condition holds exactly; $\alpha = \|A\|^2\,\delta/\|y\|$ ($\alpha \propto \delta$).
   The error must fall, stay below the bound above, and its fitted log-log slope is reported
   (theory: at least 1/2 asymptotically).
2. "shepp-logan": the truth is the Shepp-Logan phantom itself (no source condition known), same
   $\alpha(\delta)$: convergence without a rate.
3. "alpha = delta^2" (for comparison, source truth): $\delta^2/\alpha$ stays constant, the hypothesis
   fails and the bound no longer falls. The error may still fall here, more slowly: in finite
   dimensions $A$ is injective on this problem (see the smallest eigenvalue of $A^*A$ in the report),
   and the hypothesis is what guarantees convergence in the ill-posed (infinite-dimensional) limit.

**Solver.** Writing $G = I - N$, the equation is the fixed point
$x = (A^*A + \alpha I)^{-1}(A^*y^\delta + \alpha N(x))$, a contraction with factor
$\le L\,\alpha/(\lambda_{\min}(A^*A) + \alpha) \le L$ for every $\alpha$ (the plain map
$x - \eta(A^*(Ax - y) + \alpha G(x))$ of `EquilibriumRegularisation` contracts only by
$1 - O(\alpha)$). $(A^*A + \alpha I)^{-1}$ comes from the eigendecomposition of the dense $A^*A$;
the fixed point from `jaxrecon.deq.fixed_point` (Anderson, tol 1e-10: at the smallest
$\alpha/\|A\|^2 = 10^{-7}$ the map's inverse has condition $\sim 10^7$, so its float64 rounding noise
lies near $10^{-12}$ relative and a 1e-12 tolerance can stagnate unmet). Every solution is checked
with the matrix-free operator: relative residual $\|A^*(Ax - y) + \alpha G(x)\|/\|A^*y\|$. At the
largest $\alpha$, `EquilibriumRegularisation` (the library's scheme, its own map) must agree.

    python benchmarks/equilibrium_convergence.py                           # 32 x 32, 7 levels, 3 seeds: minutes
    python benchmarks/equilibrium_convergence.py --smoke --out /tmp/eqc    # 16 x 16, 3 levels, 1 seed

Writes equilibrium_convergence.json, .md and .png into --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

from harness import RESULTS, command, environment, markdown_table, pyplot, save_figure, verdict, write_results

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxrecon.deq.fixed_point import fixed_point  # noqa: E402
from jaxrecon.deq.schemes import EquilibriumRegularisation, LipschitzCNN, spectral_normalise  # noqa: E402
from jaxrecon.operators.geometry import ParallelBeamGeometry  # noqa: E402
from jaxrecon.operators.radon import RadonTransform  # noqa: E402
from jaxrecon.phantoms.shepp_logan import shepp_logan  # noqa: E402
from jaxrecon.solvers.tikhonov import as_matrix  # noqa: E402

F64 = jnp.float64
TOL = 1e-10  # relative fixed-point step; see the module docstring


def regulariser(size: int, lipschitz: float, features: int, depth: int, key) -> LipschitzCNN:
    """G(x) = x - N(x): a LipschitzCNN (residual form) whose layers all sit at their spectral bound."""
    net = LipschitzCNN(1, features, depth, lipschitz=lipschitz, residual=True, key=key, dtype=F64)
    layers = tuple(eqx.tree_at(lambda c: c.weight, c, 10.0 * c.weight) for c in net.layers)
    return spectral_normalise(eqx.tree_at(lambda m: m.layers, net, layers), (size, size))


def apply_g(g, x):
    return g(x[None])[0]


class Problem(eqx.Module):
    """The dense pieces of the solver: eigenvalues/vectors of A^T A."""

    lam: jax.Array
    vecs: jax.Array


def make_solver(problem: Problem, shape):
    def tmap(x, g, b, alpha):  # x -> (A*A + alpha I)^{-1} (A*y + alpha N(x))
        nx = x - apply_g(g, x)
        rhs = b + alpha * nx.ravel()
        return (problem.vecs @ ((problem.vecs.T @ rhs) / (problem.lam + alpha))).reshape(shape)

    @jax.jit
    def solve(g, b, alpha):
        sol = fixed_point(tmap, jnp.zeros(shape, F64), g, b, alpha, solver="anderson", tol=TOL, max_iter=2000)
        return sol.z, sol.iterations, sol.converged, sol.residual_norm

    return solve


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="16 x 16, 3 noise levels, 1 seed: a check")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-angles", type=int, default=30)
    ap.add_argument("--levels", type=int, default=7, help="relative noise levels from 1e-1 down to --min-level")
    ap.add_argument("--min-level", type=float, default=1e-4)
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per level (errors averaged)")
    ap.add_argument("--lipschitz", type=float, default=0.9)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.levels, args.min_level, args.seeds = 16, 3, 1e-3, 1
    if args.levels < 2 or not 0 < args.min_level < 0.1 or args.seeds < 1:
        ap.error(f"need --levels >= 2, 0 < --min-level < 0.1, --seeds >= 1, got {args.levels}, {args.min_level}, "
                 f"{args.seeds}")
    start = time.perf_counter()
    n = args.size
    shape = (n, n)
    op = RadonTransform(ParallelBeamGeometry.uniform(shape, args.num_angles, dtype=F64))
    matrix = np.asarray(as_matrix(op, dtype=F64))
    lam, vecs = np.linalg.eigh(matrix.T @ matrix)
    lam = np.clip(lam, 0.0, None)
    norm2 = float(lam[-1])  # ||A||^2
    problem = Problem(jnp.asarray(lam), jnp.asarray(vecs))
    solve = make_solver(problem, shape)
    g = regulariser(n, args.lipschitz, args.features, args.depth, jax.random.key(0))
    mu = 1.0 - args.lipschitz
    layer_norms = [float(c.spectral_norm(shape)) for c in g.layers]

    # Truths. Source: x = N(x) + A*w  <=>  G(x) = A*w (N is a contraction: a unique solution).
    s = shepp_logan(n, dtype=F64)
    w = op(s) / norm2
    atw = op.T(w)
    x_src = fixed_point(lambda x, g, v: x - apply_g(g, x) + v, jnp.zeros(shape, F64), g, atw, tol=TOL,
                        max_iter=2000).z
    source_residual = float(jnp.linalg.norm(apply_g(g, x_src) - atw) / jnp.linalg.norm(atw))
    truths = {"source": x_src, "shepp-logan": s}

    levels = np.geomspace(0.1, args.min_level, args.levels)
    rules = {  # name -> (truth, alpha(delta_rel) in the units of A*A)
        "source": ("source", lambda d: norm2 * d),
        "shepp-logan": ("shepp-logan", lambda d: norm2 * d),
        "alpha = delta^2": ("source", lambda d: norm2 * d**2 / levels[0]),
    }

    @jax.jit
    def residual(x, y, alpha):
        r = op.T(op(x) - y) + alpha * apply_g(g, x)
        return jnp.linalg.norm(r) / jnp.linalg.norm(op.T(y))

    runs = {}
    worst_residual, worst_fixed_point, max_iterations, all_converged = 0.0, 0.0, 0, True
    example = None
    for name, (truth_name, alpha_of) in rules.items():
        x_true = truths[truth_name]
        y_exact = op(x_true)
        rows = []
        for d_rel in levels:
            delta = float(d_rel * jnp.linalg.norm(y_exact))
            alpha = float(alpha_of(d_rel))
            errs, its = [], []
            for seed in range(args.seeds):
                eps = jax.random.normal(jax.random.key(100 + seed), y_exact.shape, F64)
                y = y_exact + delta * eps / jnp.linalg.norm(eps)
                b = jnp.asarray(matrix.T @ np.asarray(y).ravel())
                x, k, ok, fp_res = solve(g, b, jnp.asarray(alpha, F64))
                worst_fixed_point = max(worst_fixed_point, float(fp_res))
                worst_residual = max(worst_residual, float(residual(x, y, alpha)))
                max_iterations, all_converged = max(max_iterations, int(k)), all_converged and bool(ok)
                errs.append(float(jnp.linalg.norm(x - x_true)))
                its.append(int(k))
                if example is None and name == "source":
                    example = (y, alpha, x)
            row = dict(delta_rel=float(d_rel), delta=delta, alpha=alpha, alpha_rel=alpha / norm2,
                       error=float(np.mean(errs)), relative_error=float(np.mean(errs)) / float(jnp.linalg.norm(x_true)),
                       errors=errs, iterations=its)
            if truth_name == "source":
                row["bound"] = (delta + alpha * float(jnp.linalg.norm(w))) / (2 * np.sqrt(alpha * mu))
            rows.append(row)
            print(f"{name:16s} delta_rel {d_rel:.1e}  alpha/||A||^2 {alpha / norm2:.1e}  relative error "
                  f"{row['relative_error']:.3e}" + (f"  (bound {row['bound'] / float(jnp.linalg.norm(x_true)):.3e})"
                                                     if "bound" in row else ""), flush=True)
        slope = float(np.polyfit(np.log([r["delta"] for r in rows]), np.log([r["error"] for r in rows]), 1)[0])
        runs[name] = dict(truth=truth_name, rows=rows, slope=slope)
        print(f"{name:16s} fitted slope of log(error) vs log(delta): {slope:.3f}", flush=True)

    # The library's scheme, with its own fixed-point map, at the largest alpha.
    y, alpha, x_ref = example
    model = EquilibriumRegularisation(op, regulariser=g, alpha=alpha, tol=1e-11, max_iter=5000, dtype=F64)
    sol = eqx.filter_jit(lambda m, y: m.solve(y, op))(model, y)
    library = dict(alpha_rel=alpha / norm2, iterations=int(sol.iterations), converged=bool(sol.converged),
                   relative_difference=float(jnp.linalg.norm(sol.z - x_ref) / jnp.linalg.norm(x_ref)))
    print(f"EquilibriumRegularisation at alpha/||A||^2 = {alpha / norm2:.1e}: {library['iterations']} iterations, "
          f"relative difference to the solver here {library['relative_difference']:.1e}", flush=True)

    verdicts = checks(runs, worst_residual, all_converged, library)
    for v in verdicts:
        print(verdict(v))
    meta = dict(command=command(__file__, argv),
                args=vars(args), num_detectors=int(op.out_shape[1]), operator_norm_squared=norm2,
                smallest_eigenvalue=float(lam[0]), rank=int(np.sum(lam > lam[-1] * 1e-12)), layer_norms=layer_norms,
                strong_monotonicity=mu, source_residual=source_residual, w_norm=float(jnp.linalg.norm(w)),
                worst_residual=worst_residual, worst_fixed_point_step=worst_fixed_point, max_iterations=max_iterations, all_converged=all_converged,
                library_check=library, **environment(), total_seconds=time.perf_counter() - start)
    stem = Path(args.out) / "equilibrium_convergence"
    write_results(stem.name, dict(meta=meta, runs=runs, checks=verdicts), markdown(meta, runs, verdicts), stem.parent)
    figure(runs, truths, stem.with_suffix(".png"))
    print(f"total {meta['total_seconds'] / 60:.1f} min; wrote {stem}.json/.md/.png")


def checks(runs, worst_residual, all_converged, library):
    out = []
    for name in ("source", "shepp-logan"):
        errs = [r["error"] for r in runs[name]["rows"]]
        falling = all(b < a for a, b in zip(errs, errs[1:]))
        rel = ", ".join(f"{r['relative_error']:.2e}" for r in runs[name]["rows"])
        out.append(dict(claim=f"{name}: the error falls at every smaller delta (alpha = delta)", passed=falling,
                        detail=f"relative errors {rel}"))
    src = runs["source"]
    within = all(r["error"] <= r["bound"] for r in src["rows"])
    out.append(dict(claim="source: error <= (delta + alpha ||w||) / (2 sqrt(alpha mu)) at every delta", passed=within,
                    detail=", ".join(f"{r['error'] / r['bound']:.2f}" for r in src["rows"]) + " of the bound"))
    out.append(dict(claim="source: fitted slope >= 0.45 (the O(sqrt(delta)) rate)", passed=src["slope"] >= 0.45,
                    detail=f"slope {src['slope']:.3f}"))
    out.append(dict(claim="every equilibrium solve converged, relative residual of the equation <= 1e-8",
                    passed=all_converged and worst_residual <= 1e-8, detail=f"worst residual {worst_residual:.1e}, "
                           f"{'all' if all_converged else 'NOT all'} fixed-point solves within tol {TOL:.0e}"))
    out.append(dict(claim="EquilibriumRegularisation (library map) agrees to 1e-6 at the largest alpha",
                    passed=library["converged"] and library["relative_difference"] <= 1e-6,
                    detail=f"{library['iterations']} iterations, relative difference {library['relative_difference']:.1e}"))
    return out


def markdown(meta, runs, verdicts) -> str:
    a = meta["args"]
    lines = [
        "# Convergence of equilibrium regularisation as delta -> 0",
        "",
        f"`{meta['command']}` on {meta['device_kind']} ({meta['cpu_count']} CPU cores visible), jax {meta['jax']}, "
        f"{meta['date']}; whole run {meta['total_seconds']:.0f} s.",
        "",
        f"Equation $A^*(Ax - y^\\delta) + \\alpha G(x) = 0$; CT {a['size']} x {a['size']}, {a['num_angles']} views, "
        f"{meta['num_detectors']} detectors, float64 ($\\|A\\|^2$ = {meta['operator_norm_squared']:.4g}, smallest "
        f"eigenvalue of $A^*A$ {meta['smallest_eigenvalue']:.2e}). $G(x) = x - N(x)$, $N$ a spectrally normalised "
        f"LipschitzCNN ({a['features']} features, depth {a['depth']}, layer norms "
        f"{', '.join(f'{v:.3f}' for v in meta['layer_norms'])}; Lip(N) <= {a['lipschitz']}): strongly monotone "
        f"with mu = {meta['strong_monotonicity']:.2f} and Lipschitz, the hypotheses of Obmann & Haltmeier's "
        "analysis. Source truth: $G(x^\\dagger) = A^*w$ (relative residual "
        f"{meta['source_residual']:.1e}). Noise: Gaussian direction scaled to $\\|y^\\delta - Ax^\\dagger\\| = "
        f"\\delta$, {a['seeds']} draw(s) per level, errors averaged. Worst relative residual of the equation over all "
        f"solves: {meta['worst_residual']:.1e} (worst relative fixed-point step "
        f"{meta['worst_fixed_point_step']:.1e}); Anderson iterations at most {meta['max_iterations']}.",
        "",
    ]
    norm_true = {n: r["rows"][0]["error"] / r["rows"][0]["relative_error"] for n, r in runs.items()}
    header, table = ["delta / ‖y‖"], []
    for n in runs:
        header += [f"{n}: alpha/‖A‖²", "rel. error"]
    for i, row in enumerate(runs["source"]["rows"]):
        cells = [f"{row['delta_rel']:.1e}"]
        for r in runs.values():
            cells += [f"{r['rows'][i]['alpha_rel']:.1e}", f"{r['rows'][i]['relative_error']:.3e}"]
        table.append([*cells, f"{row['bound'] / norm_true['source']:.3e}"])
    lines += markdown_table([*header, "source: bound"], table)
    lines += ["", "Fitted slopes of log(error) against log(delta): "
              + ", ".join(f"{n} {r['slope']:.3f}" for n, r in runs.items()) + " (theory for `source`: >= 0.5).",
              "", "Checks:", ""]
    lines += [f"- {verdict(v)}" for v in verdicts]
    return "\n".join(lines) + "\n"


def figure(runs, truths, path):
    fig, axes = pyplot().subplots(1, 3, figsize=(11, 3.4), gridspec_kw=dict(width_ratios=[2, 1, 1]))
    ax = axes[0]
    for n, r in runs.items():
        d = np.array([row["delta_rel"] for row in r["rows"]])
        e = np.array([row["relative_error"] for row in r["rows"]])
        ax.loglog(d, e, "o-", label=f"{n} (slope {r['slope']:.2f})")
    src = runs["source"]["rows"]
    scale = src[0]["error"] / src[0]["relative_error"]
    ax.loglog([r["delta_rel"] for r in src], [r["bound"] / scale for r in src], "k:", label="bound (source)")
    ax.set(xlabel="relative noise level delta / ||y||", ylabel="relative error", title="equilibrium solution error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    for ax, (n, x) in zip(axes[1:], truths.items()):
        ax.imshow(np.asarray(x), cmap="gray")
        ax.set_title(f"truth: {n}", fontsize=8)
        ax.axis("off")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
