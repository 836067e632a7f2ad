"""Projections split over devices equal the single-device ones (4 forced CPU devices, in a subprocess).

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before JAX starts, so the comparisons
run in a child process (`SCRIPT`), which prints one JSON line of relative errors per case.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxrecon.operators import (
    ParallelBeamGeometry,
    XRayTransform,
    backproject,
    project,
    projection_mesh,
    select_views,
    sharded_project,
)

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys, time, warnings
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    warnings.simplefilter("ignore", UserWarning)  # truncated detectors in the small cone geometries
    from jaxrecon.operators import (ConeBeamGeometry, FanBeamGeometry, HelicalConeBeamGeometry, Parallel3DGeometry,
                                    ParallelBeamGeometry, XRayTransform, backproject, dot_test, project,
                                    projection_mesh, select_views)

    def rel(a, b):
        return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))

    GEOMS = {
        "parallel": lambda: ParallelBeamGeometry.uniform((9, 10), 8),
        "parallel7": lambda: ParallelBeamGeometry.uniform((9, 10), 7),  # 7 views: padded to 8
        "fan": lambda: FanBeamGeometry.uniform((9, 10), 8, 30.0, 20.0, detector="curved"),
        "fanvec": lambda: FanBeamGeometry.uniform((9, 10), 8, 30.0, 20.0).to_vec(),
        "cone": lambda: ConeBeamGeometry.uniform((7, 8, 8), 6, (10, 12), 30.0, 15.0, det_offset=(0.3, 0.2)),
        "conevec": lambda: ConeBeamGeometry.uniform((8, 8, 8), 8, (10, 12), 30.0, 15.0).to_vec(),
        "helical": lambda: HelicalConeBeamGeometry.uniform((8, 8, 8), 8, (10, 12), 30.0, 15.0, pitch=4.0, turns=1.0),
        "parallel3d": lambda: Parallel3DGeometry.uniform((5, 8, 8), 8),
        "parallel3dvec": lambda: Parallel3DGeometry.uniform((5, 8, 8), 8).to_vec(),
    }

    def case(name, slabs, mode):  # mode: basic, more (+ jit, select_views), grad (+ gradients, vmap)
        t0 = time.perf_counter()
        g = GEOMS[name]()
        mesh = projection_mesh(slabs=slabs)
        x = jax.random.uniform(jax.random.key(0), g.shape, jnp.float64)
        y0 = project(x, g)
        y, b = project(x, g, mesh=mesh), backproject(y0, g, mesh=mesh)
        op = XRayTransform(g, mesh=mesh)
        out = {
            "fwd": rel(y, y0), "adj": rel(b, backproject(y0, g)),
            "dot": float(dot_test(op)),
            "y_devices": len(y.sharding.device_set), "y_shards": sorted({s.data.shape[0] for s in y.addressable_shards}),
            "b_devices": len(b.sharding.device_set), "b_shards": sorted({s.data.shape[0] for s in b.addressable_shards}),
        }
        if mode in ("more", "grad"):
            out["jit"] = rel(jax.jit(lambda x, g: XRayTransform(g, mesh=mesh)(x))(x, g), y0)
            if name in ("parallel", "parallel7", "fan"):
                sub = select_views(op, jnp.array([0, 2, 5]))
                out["select_views"] = rel(sub(x), y0[jnp.array([0, 2, 5])])
        if mode == "grad":
            f = lambda x, g, m: jnp.sum(jnp.sin(project(x, g, mesh=m)))
            gx, gg = jax.grad(f, (0, 1))(x, g, mesh)
            gx0, gg0 = jax.grad(f, (0, 1))(x, g, None)
            out["grad_x"] = rel(gx, gx0)
            out["grad_geom"] = max(rel(a, b) for a, b in zip(jax.tree.leaves(gg), jax.tree.leaves(gg0)))
            h = lambda y, m: jnp.sum(jnp.sin(backproject(y, g, mesh=m)))
            out["grad_y"] = rel(jax.grad(h)(y0, mesh), jax.grad(h)(y0, None))
            ys = jax.vmap(op)(jnp.stack([x, 2 * x]))
            out["vmap"] = max(rel(ys[0], y0), rel(ys[1], 2 * y0))
        out["seconds"] = time.perf_counter() - t0
        return out

    result = {"devices": len(jax.devices())}
    for spec in sys.argv[1:]:
        name, slabs, mode = spec.split(":")
        result[spec] = case(name, int(slabs), mode)
    try:
        project(jnp.zeros((9, 10)), GEOMS["parallel"](), mesh=projection_mesh(slabs=2))
        result["slab_error"] = "no error"
    except ValueError as e:
        result["slab_error"] = str(e)
    print("RESULT" + json.dumps(result))
    """
)


def _run(*cases, timeout=600):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *cases], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    assert result["devices"] == 4
    print({k: round(v["seconds"], 1) for k, v in result.items() if isinstance(v, dict)})  # shown with -s
    return result


def _check(r, views, exact_views=True):
    """Equal to one device to rounding (float64), and really spread over the 4 devices."""
    for key in ("fwd", "adj", "jit", "grad_x", "grad_geom", "grad_y", "vmap", "select_views"):
        if key in r:
            assert r[key] < 1e-13, (key, r[key])
    assert r["dot"] < 1e-13
    assert r["y_devices"] == 4 and r["b_devices"] == 4
    if exact_views:  # every device holds its own block of views
        assert r["y_shards"] == [views], r["y_shards"]


@pytest.mark.slow
def test_views_split_parallel_beam():
    r = _run("parallel:1:basic")
    _check(r["parallel:1:basic"], views=2)  # 8 views, 2 per device
    assert "slabs" in r["slab_error"] and "ParallelBeamGeometry" in r["slab_error"]


@pytest.mark.slow
def test_views_and_slabs_of_cone_and_fan_beam():
    r = _run("parallel7:1:grad", "cone:2:grad", "cone:4:basic", "conevec:1:more", "conevec:4:basic", "fan:1:grad",
             "fanvec:1:more")
    # 7 views padded to 8 (2 per device); the padded view is cut off, so XLA picks the output's layout
    _check(r["parallel7:1:grad"], views=None, exact_views=False)
    _check(r["cone:2:grad"], views=3)  # a 2 x 2 grid: 3 views and a z-slab of 4 (7 padded to 8) per device
    _check(r["cone:4:basic"], views=6)  # slabs only: every device has all views, 2 slices of 7 (+1 zero)
    _check(r["conevec:1:more"], views=2)  # views only
    _check(r["conevec:4:basic"], views=8)
    assert r["conevec:4:basic"]["b_shards"] == [2]  # the adjoint's volume comes back split by slabs
    _check(r["fan:1:grad"], views=2)
    _check(r["fanvec:1:more"], views=2)


@pytest.mark.slow
def test_views_and_slabs_of_the_3d_geometries():
    r = _run("helical:2:basic", "parallel3d:1:basic", "parallel3dvec:1:basic")
    _check(r["helical:2:basic"], views=4)  # a 2 x 2 grid: 4 views and a slab of 4 slices per device
    _check(r["parallel3d:1:basic"], views=2)
    _check(r["parallel3dvec:1:basic"], views=2)


# --- in this process (one device) -------------------------------------------------------------------


def test_one_device_mesh_and_operator():
    geom = ParallelBeamGeometry.uniform((8, 8), 5)
    x = jax.random.uniform(jax.random.key(1), (8, 8), jnp.float64)
    mesh = projection_mesh()
    assert mesh.axis_names == ("views", "slabs") and mesh.devices.shape == (len(jax.devices()), 1)
    op = XRayTransform(geom, mesh=mesh)
    np.testing.assert_allclose(op(x), project(x, geom), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(op.T(op(x)), backproject(project(x, geom), geom), rtol=1e-13, atol=1e-13)
    assert select_views(op, jnp.array([1, 3])).mesh is mesh
    only_slabs = Mesh(np.asarray(jax.devices()[:1]), ("slabs",))  # no "views" axis; one slab: any geometry
    np.testing.assert_allclose(project(x, geom, mesh=only_slabs), project(x, geom), rtol=1e-14, atol=1e-14)


def test_errors():
    geom = ParallelBeamGeometry.uniform((8, 8), 5)
    x = jnp.ones((8, 8))
    with pytest.raises(TypeError, match="expects mesh to be a jax.sharding.Mesh"):
        sharded_project(x, geom, "mesh")
    with pytest.raises(ValueError, match=r"an axis 'views' and/or 'slabs', got axes \('batch',\)"):
        project(x, geom, mesh=Mesh(np.asarray(jax.devices()), ("batch",)))
    with pytest.raises(ValueError, match=r"expects an image of shape \(8, 8\), got \(8, 9\)"):
        project(jnp.ones((8, 9)), geom, mesh=projection_mesh())
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh or None"):
        XRayTransform(geom, mesh="mesh")
    with pytest.raises(ValueError, match="slabs must be a positive int dividing"):
        projection_mesh(slabs=len(jax.devices()) + 1)
    with pytest.raises(TypeError, match="non-empty sequence of jax devices"):
        projection_mesh(devices=[])
