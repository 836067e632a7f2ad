"""Data parallelism: a 2-device CPU run (subprocess) matches 1 device; the batch really is split."""

import doctest
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

from jaxrecon.train.sharding import data_parallel_mesh, replicate, shard_batch

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    from jaxrecon.operators.geometry import ParallelBeamGeometry
    from jaxrecon.operators.radon import RadonTransform
    from jaxrecon.train.data import Sample, split_key
    from jaxrecon.train.loop import default_optimizer, fit, reconstruction_loss
    from jaxrecon.train.sharding import data_parallel_mesh, shard_batch

    op = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 6))

    class ConvNet(eqx.Module):
        conv: eqx.nn.Conv2d
        def __call__(self, y, op):
            return self.conv(0.05 * op.T(y)[None])[0]

    @jax.jit
    def make_batch(key):
        x = jax.random.uniform(key, (4, 8, 8), jnp.float64)
        return Sample(jax.vmap(op)(x), x)

    seen = []  # shardings of the batch as the jitted step sees it

    def loss_fn(model, batch):
        jax.debug.inspect_array_sharding(
            batch.y, callback=lambda s: seen.append([len(s.device_set), list(s.shard_shape(batch.y.shape))]))
        return reconstruction_loss(model, op, batch)

    model = ConvNet(eqx.nn.Conv2d(1, 1, 3, padding=1, key=jax.random.key(0), dtype=jnp.float64))
    opt = default_optimizer(0.05, num_steps=5)
    batch_fn = lambda k: make_batch(split_key(0, "train", k))
    mesh = data_parallel_mesh()
    two = fit(model, loss_fn, batch_fn, opt, 5, mesh=mesh, progress=False)
    sharded_seen = list(seen)
    one = fit(model, loss_fn, batch_fn, opt, 5, progress=False)
    placed = shard_batch(batch_fn(0), mesh)
    try:
        shard_batch(Sample(jnp.zeros((3, 6, 12)), jnp.zeros((3, 8, 8))), mesh)
        odd = "no error"
    except ValueError as e:
        odd = str(e)
    print("RESULT" + json.dumps({
        "devices": len(jax.devices()),
        "loss_two": two.history["loss"], "loss_one": one.history["loss"],
        "w_two": two.model.conv.weight.ravel().tolist(), "w_one": one.model.conv.weight.ravel().tolist(),
        "w_replicated": two.model.conv.weight.sharding.is_fully_replicated,
        "w_devices": len(two.model.conv.weight.sharding.device_set),
        "seen": sharded_seen,
        "placed": [list(s.data.shape) for s in placed.y.addressable_shards],
        "odd": odd,
    }))
    """
)


@pytest.fixture(scope="module")
def two_device_run():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_two_devices_match_one(two_device_run):
    r = two_device_run
    assert r["devices"] == 2
    assert len(r["loss_two"]) == 5
    np.testing.assert_allclose(r["loss_two"], r["loss_one"], rtol=1e-5)
    np.testing.assert_allclose(r["w_two"], r["w_one"], rtol=1e-5, atol=1e-12)
    assert r["loss_two"][-1] < r["loss_two"][0]
    # parameters stay replicated over both devices
    assert r["w_replicated"] and r["w_devices"] == 2


def test_batch_is_split_across_devices(two_device_run):
    r = two_device_run
    # inside the jitted step: the sinograms (4, 6, 12) live on 2 devices as (2, 6, 12) shards
    assert r["seen"] and all(s == [2, [2, 6, 12]] for s in r["seen"])
    assert r["placed"] == [[2, 6, 12], [2, 6, 12]]
    assert "divisible by the 2 devices" in r["odd"] and "got 3" in r["odd"]


def test_single_process_helpers_and_errors():
    mesh = data_parallel_mesh()
    assert mesh.axis_names == ("batch",) and mesh.shape["batch"] == len(jax.devices())
    batch = {"y": jnp.ones((len(jax.devices()) * 2, 3)), "tag": "static"}
    placed = shard_batch(batch, mesh)
    assert placed["tag"] == "static"
    np.testing.assert_array_equal(placed["y"], batch["y"])
    tree = replicate({"w": jnp.arange(3.0), "n": 3}, mesh)
    assert tree["n"] == 3 and tree["w"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match=r"share the leading batch size, got sizes \[2, 3\]"):
        shard_batch((jnp.ones((2, 1)), jnp.ones((3, 1))), mesh)
    with pytest.raises(ValueError, match="scalar leaf"):
        shard_batch((jnp.ones((2, 1)), jnp.ones(())), mesh)
    with pytest.raises(ValueError, match="at least one array leaf"):
        shard_batch({"a": 1}, mesh)
    with pytest.raises(TypeError, match="expects a jax.sharding.Mesh"):
        shard_batch(jnp.ones((2, 1)), "mesh")
    other = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    with pytest.raises(ValueError, match=r"an axis 'batch', got axes \('data',\)"):
        replicate({"w": jnp.ones(2)}, other)
    with pytest.raises(TypeError, match="non-empty sequence of jax devices"):
        data_parallel_mesh([])
    with pytest.raises(ValueError, match="distinct"):
        data_parallel_mesh(jax.devices() * 2)


def test_docstring_examples():
    result = doctest.testmod(sys.modules["jaxrecon.train.sharding"], extraglobs={"jnp": jnp})
    assert result.attempted > 0 and result.failed == 0
