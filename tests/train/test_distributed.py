"""Several processes (jax.distributed on 127.0.0.1, gloo collectives): the same results as one process.

Each check spawns 2 Python processes with 2 CPU devices each (4 devices in all); they fail after a
timeout instead of hanging (both are killed and their output shown).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.train.distributed import (
    agree,
    initialize_distributed,
    is_main_process,
    local_part,
    process_rows,
)

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import json, sys, warnings
    pid, port, what, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    import jax
    from jaxrecon.train.distributed import agree, initialize_distributed, local_part, process_rows
    initialize_distributed(f"127.0.0.1:{port}", 2, pid, initialization_timeout=60)
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    out = {"pid": pid, "processes": jax.process_count(), "devices": len(jax.devices()),
           "local_devices": len(jax.local_devices()), "rows": [process_rows(4).start, process_rows(4).stop],
           "agree": agree(pid == 1)}

    def rel(a, b):
        return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))

    def gather(a):  # the whole global array, on every process
        return jnp.asarray(multihost_utils.process_allgather(a, tiled=True))

    if "radon" in what:
        from jaxrecon.operators import ParallelBeamGeometry, backproject, project, projection_mesh
        g = ParallelBeamGeometry.uniform((9, 10), 8)
        x = jax.random.uniform(jax.random.key(0), g.shape, jnp.float64)
        y0 = project(x, g)
        y = project(x, g, mesh=projection_mesh())  # 2 views on each of the 4 devices
        b = backproject(y0, g, mesh=projection_mesh())
        out["radon"] = {"fwd": rel(gather(y), y0), "adj": rel(gather(b), backproject(y0, g)),
                        "local_views": [s.data.shape[0] for s in y.addressable_shards]}

    if "project" in what:
        warnings.simplefilter("ignore", UserWarning)
        from jaxrecon.operators import ConeBeamGeometry, XRayTransform, backproject, project, projection_mesh
        g = ConeBeamGeometry.uniform((6, 8, 8), 4, (10, 14), 30.0, 15.0)
        mesh = projection_mesh(slabs=2)  # (views, slabs) = (2, 2): views across the processes, slabs within
        x = jax.random.uniform(jax.random.key(0), g.shape, jnp.float64)
        y0 = project(x, g)
        y, b = project(x, g, mesh=mesh), backproject(y0, g, mesh=mesh)
        out["project"] = {"fwd": rel(gather(y), y0), "adj": rel(gather(b), backproject(y0, g)),
                          "y_devices": len(y.sharding.device_set), "y_local_views": y.addressable_shards[0].data.shape[0],
                          "fully_addressable": y.is_fully_addressable}

    if "fit" in what:
        from jaxrecon.operators.geometry import ParallelBeamGeometry
        from jaxrecon.operators.radon import RadonTransform
        from jaxrecon.train.data import Sample, split_key
        from jaxrecon.train.loop import default_optimizer, fit, reconstruction_loss_fn
        from jaxrecon.train.sharding import data_parallel_mesh, shard_batch

        op = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 6))

        class ConvNet(eqx.Module):
            conv: eqx.nn.Conv2d
            def __call__(self, y, op):
                return self.conv(0.05 * op.T(y)[None])[0]

        @jax.jit
        def make_batch(key):  # the global batch of a step: 4 samples
            x = jax.random.uniform(key, (4, 8, 8), jnp.float64)
            return Sample(jax.vmap(op)(x), x)

        model = ConvNet(eqx.nn.Conv2d(1, 1, 3, padding=1, key=jax.random.key(0), dtype=jnp.float64))
        opt = default_optimizer(0.05, num_steps=5)
        whole = lambda k: make_batch(split_key(0, "train", k))
        mine = lambda k: local_part(whole(k))  # this process's 2 samples
        val = whole(100)
        validate = lambda m: {"mse": jnp.mean((jax.vmap(lambda y: m(y, op))(val.y) - val.x) ** 2)}
        loss_fn, mesh = reconstruction_loss_fn(op), data_parallel_mesh()
        two = fit(model, loss_fn, mine, opt, 5, mesh=mesh, progress=False, validate_fn=validate, validate_every=2)
        one = fit(model, loss_fn, whole, opt, 5, progress=False, validate_fn=validate, validate_every=2)
        ckpt = workdir + "/ckpt"
        fit(model, loss_fn, mine, opt, 3, mesh=mesh, progress=False, checkpoint_dir=ckpt, config={"run": 1})
        resumed = fit(model, loss_fn, mine, opt, 5, mesh=mesh, progress=False, checkpoint_dir=ckpt, config={"run": 1})
        # process 0 runs out of time after its first step, process 1 never would: both stop there together
        stopped = fit(model, loss_fn, mine, opt, 5, mesh=mesh, progress=False, time_limit=1e-9 if pid == 0 else 1e9)
        w = lambda m: np.asarray(m.conv.weight.addressable_data(0)).ravel().tolist()
        out["fit"] = {"loss_two": two.history["loss"], "loss_one": one.history["loss"],
                      "val_two": two.history["val_mse"], "val_one": one.history["val_mse"],
                      "w_two": w(two.model), "w_one": np.asarray(one.model.conv.weight).ravel().tolist(),
                      "w_resumed": w(resumed.model), "resumed_steps": resumed.history["step"],
                      "stopped_steps": stopped.history["step"],
                      "w_devices": len(two.model.conv.weight.sharding.device_set)}
        placed = shard_batch(mine(0), mesh).y  # the global (4, 6, 12) batch: one sample per device
        out["fit"]["batch"] = [list(placed.shape), len(placed.sharding.device_set),
                               [list(s.data.shape) for s in placed.addressable_shards]]
    print("RESULT" + json.dumps(out), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(argv_of, workdir: Path, timeout: float, devices: int = 2) -> list[tuple[int, str, str]]:
    """Run `argv_of(process_id, port)` as 2 processes; `(returncode, stdout, stderr)` of each, or fail at `timeout`."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    logs = [(workdir / f"out{i}.txt", workdir / f"err{i}.txt") for i in range(2)]
    procs = []
    try:
        for i, (out, err) in enumerate(logs):  # files, not pipes: a full pipe would stall one process and both
            with open(out, "w") as fo, open(err, "w") as fe:
                procs.append(subprocess.Popen(argv_of(i, port), env=env, stdout=fo, stderr=fe, text=True,
                                              cwd=workdir))
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                tails = "\n".join(f"process {i}:\n{err.read_text()[-1500:]}" for i, (_, err) in enumerate(logs))
                pytest.fail(f"the 2 processes did not finish within {timeout:.0f} s (killed); stderr:\n{tails}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out.read_text(), err.read_text()) for p, (out, err) in zip(procs, logs)]


def _worker_results(tmp_path, what: str, timeout: float) -> list[dict]:
    runs = _spawn(lambda i, port: [sys.executable, "-c", WORKER, str(i), str(port), what, str(tmp_path)],
                  tmp_path, timeout)
    results = []
    for i, (code, out, err) in enumerate(runs):
        assert code == 0, f"process {i} failed:\n{err[-3000:]}"
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
        results.append(json.loads(line[len("RESULT"):]))
    return results


@pytest.mark.slow
def test_sharded_projection_and_data_parallel_training_across_two_processes(tmp_path):
    results = _worker_results(tmp_path, "radon,project,fit", timeout=400)
    for pid, r in enumerate(results):
        assert r["pid"] == pid and r["processes"] == 2 and r["devices"] == 4 and r["local_devices"] == 2
        assert r["rows"] == [2 * pid, 2 * pid + 2]  # each process draws its half of a batch of 4
        assert r["agree"] is False  # process 0's value (False) on both, though process 1 passed True
        assert r["radon"]["fwd"] < 1e-13 and r["radon"]["adj"] < 1e-13
        assert r["radon"]["local_views"] == [2, 2]  # 8 views: 2 on each of the 4 devices
        p = r["project"]  # a 2 x 2 (views x slabs) grid over both processes equals one device
        assert p["fwd"] < 1e-13 and p["adj"] < 1e-13
        assert p["y_devices"] == 4 and p["y_local_views"] == 2 and not p["fully_addressable"]
        f = r["fit"]
        assert len(f["loss_two"]) == 5 and f["loss_two"][-1] < f["loss_two"][0]
        np.testing.assert_allclose(f["loss_two"], f["loss_one"], rtol=1e-12)
        np.testing.assert_allclose(f["val_two"], f["val_one"], rtol=1e-12)
        np.testing.assert_allclose(f["w_two"], f["w_one"], rtol=1e-12, atol=1e-15)
        assert f["w_devices"] == 4 and f["batch"] == [[4, 6, 12], 4, [[1, 6, 12], [1, 6, 12]]]
        # 3 steps, checkpoint (process 0 writes), resume to 5: bitwise the uninterrupted two-process run
        assert f["resumed_steps"] == [0, 1, 2, 3, 4] and f["w_resumed"] == f["w_two"]
        assert f["stopped_steps"] == [0]  # a time limit stops every process at process 0's step
    # identical parameters on both processes
    assert results[0]["fit"]["w_two"] == results[1]["fit"]["w_two"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest", "step_00000003", "step_00000005"]


@pytest.mark.slow
def test_cli_train_on_two_processes_matches_one(tmp_path):
    from jaxrecon.train.experiment import load_trained

    train = [sys.executable, "-m", "jaxrecon.cli", "train", "--model", "pgd", "--steps", "2", "--no-progress"]
    runs = _spawn(lambda i, port: train + ["--output", "two", "--coordinator-address", f"127.0.0.1:{port}",
                                           "--num-processes", "2", "--process-id", str(i)], tmp_path, timeout=500,
                  devices=1)
    for i, (code, _, err) in enumerate(runs):
        assert code == 0, f"process {i} failed:\n{err[-3000:]}"
    assert "trained pgd (quick) for 2 steps" in runs[0][1] and "trained" not in runs[1][1]  # process 0 reports
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    one = subprocess.run(train + ["--output", "one"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]
    (m2, _, c2), (m1, _, c1) = load_trained(tmp_path / "two"), load_trained(tmp_path / "one")
    assert c1 == c2
    leaves2, leaves1 = (jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)) for m in (m2, m1))
    assert len(leaves1) == len(leaves2) > 0
    for a, b in zip(leaves2, leaves1):  # float32: the gradient's sums run in another order
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    h2, h1 = (json.loads((tmp_path / d / "step_00000002" / "config.json").read_text())["history"] for d in ("two", "one"))
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-5)


# --- one process (this one) ---------------------------------------------------------------------------


def test_one_process_helpers():
    assert is_main_process() and process_rows(8) == slice(0, 8)
    batch = {"x": jnp.arange(6.0).reshape(3, 2), "tag": "static"}
    assert local_part(batch) is batch
    assert agree(True) is True and agree(0) is False


def test_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        process_rows(0)
    with pytest.raises(ValueError, match=r"share the leading batch size, got \[2, 3\]"):
        local_part((jnp.ones((2, 1)), jnp.ones((3, 1))))
    with pytest.raises(ValueError, match="num_processes must be an int >= 1 or None, got 0"):
        initialize_distributed("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="process_id must be below num_processes = 2, got 2"):
        initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="coordinator_address must be 'host:port', got '127.0.0.1'"):
        initialize_distributed("127.0.0.1", 2, 0)
