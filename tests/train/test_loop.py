"""Training loop: NumPy reference of clipped Adam + cosine schedule, one compilation, exact resume, history."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrecon.metrics.quality import psnr
from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.matrix import MatrixOperator
from jaxrecon.operators.radon import RadonTransform
from jaxrecon.train.checkpoint import latest_checkpoint
from jaxrecon.train.data import Sample, split_key
from jaxrecon.train.loop import (
    TrainResult,
    default_optimizer,
    fit,
    reconstruction_loss,
    reconstruction_loss_fn,
)

OP = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 6))
BATCH = 4


class Tiny(eqx.Module):
    w: jax.Array

    def __call__(self, y, op):
        return self.w * op.T(y)


class ConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    scale: jax.Array

    def __init__(self, key):
        self.conv = eqx.nn.Conv2d(1, 1, 3, padding=1, key=key, dtype=jnp.float64)
        self.scale = jnp.asarray(0.05)

    def __call__(self, y, op):
        return self.conv(self.scale * op.T(y)[None])[0]


@jax.jit
def _make_batch(key, op):
    x = jax.random.uniform(key, (BATCH,) + op.in_shape, jnp.float64)
    y = jax.vmap(op)(x)
    return Sample(y + 0.01 * jax.random.normal(jax.random.fold_in(key, 1), y.shape, y.dtype), x)


def batch_fn(k):
    return _make_batch(split_key(0, "train", k), OP)


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------


def _numpy_adam(grad_fn, w, num_steps, lr, clip, warmup, b1=0.9, b2=0.999, eps=1e-8):
    """Clip by global norm, then Adam with a (warm-up +) cosine-decay learning rate, by hand."""
    m = v = 0.0
    ws, losses = [], []
    for k in range(num_steps):
        loss, g = grad_fn(w)
        losses.append(loss)
        if clip is not None and abs(g) > clip:
            g = g * clip / abs(g)
        if k < warmup:
            rate = lr * k / warmup
        else:
            rate = lr * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (num_steps - warmup)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = k + 1
        w = w - rate * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        ws.append(w)
    return ws, losses


@pytest.mark.parametrize("clip, warmup, b2", [(None, 0, 0.999), (0.5, 3, 0.999), (0.5, 0, 0.99)])
def test_default_optimizer_matches_numpy(clip, warmup, b2):
    a = np.array([3.0, -1.0, 0.5])
    target = np.array([1.0, 2.0, -1.0])

    def grad_fn(w):  # f(w) = |w a - target|^2: gradients of size ~5 to test the clipping
        r = w * a - target
        return float(r @ r), float(2 * r @ a)

    opt = default_optimizer(0.1, num_steps=10, clip=clip, warmup=warmup, b2=b2)
    w, state = jnp.asarray(2.0), opt.init(jnp.asarray(2.0))
    ours = []
    for _ in range(10):
        _, g = grad_fn(float(w))
        updates, state = opt.update(jnp.asarray(g), state, w)
        w = optax.apply_updates(w, updates)
        ours.append(float(w))
    ref, _ = _numpy_adam(grad_fn, 2.0, 10, 0.1, clip, warmup, b2=b2)
    # optax evaluates the warm-up ramp (int32 step count / int) in float32: ~1e-7 relative
    np.testing.assert_allclose(ours, ref, rtol=1e-6 if warmup else 1e-12)


def test_reconstruction_loss_against_numpy():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 3))
    op = MatrixOperator(jnp.asarray(A))
    ys, xs = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    model = Tiny(jnp.asarray(0.7))
    ref = np.mean([np.mean((0.7 * A.T @ y - x) ** 2) for y, x in zip(ys, xs)])
    batch = Sample(jnp.asarray(ys), jnp.asarray(xs))
    assert float(reconstruction_loss(model, op, batch)) == pytest.approx(ref, rel=1e-13)
    loss_fn = reconstruction_loss_fn(op)
    assert float(loss_fn(model, batch)) == pytest.approx(ref, rel=1e-13)
    # the operator's matrix is a leaf of the loss function: traced in the jitted step, not a constant
    assert any(leaf is op.matrix for leaf in jax.tree.leaves(loss_fn))
    with pytest.raises(ValueError, match=r"batch.y of shape \(B, \*\(5,\)\), got \(4, 3\)"):
        reconstruction_loss(model, op, Sample(jnp.zeros((4, 3)), jnp.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"batch.x of shape \(4, 3\), got \(4, 5\)"):
        reconstruction_loss(model, op, Sample(jnp.zeros((4, 5)), jnp.zeros((4, 5))))
    with pytest.raises(TypeError, match="Sample"):
        reconstruction_loss(model, op, (jnp.zeros((4, 5)), jnp.zeros((4, 3))))
    with pytest.raises(ValueError, match="model\\(y, op\\) to return op.in_shape"):
        reconstruction_loss(lambda y, op: y[:2], op, batch)


def test_fit_matches_numpy_and_compiles_once(capsys):
    traces = []

    def counting_loss(op, model, batch):
        traces.append(1)  # runs only while tracing
        return reconstruction_loss(model, op, batch)

    num_steps = 8
    opt = default_optimizer(0.05, num_steps=num_steps, clip=1.0)
    # a weakly typed initial parameter must not cause a second compilation
    result = fit(Tiny(jnp.asarray(0.01)), eqx.Partial(counting_loss, OP), batch_fn, opt, num_steps, progress=True)
    assert isinstance(result, TrainResult)
    assert len(traces) == 1
    assert "loss=" in capsys.readouterr().err

    batches = [batch_fn(k) for k in range(num_steps)]
    bs = [np.asarray(jax.vmap(OP.T)(b.y)) for b in batches]

    def grad_fn_at(k):
        b, x = bs[k], np.asarray(batches[k].x)
        return lambda w: (float(np.mean((w * b - x) ** 2)), float(np.mean(2 * (w * b - x) * b)))

    # the reference needs the batch of each step: run it step by step
    w, m, v = 0.01, 0.0, 0.0
    ref_w, ref_loss = [], []
    for k in range(num_steps):
        loss, g = grad_fn_at(k)(w)
        ref_loss.append(loss)
        g = g * min(1.0, 1.0 / abs(g))
        rate = 0.05 * 0.5 * (1 + math.cos(math.pi * k / num_steps))
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - rate * (m / (1 - 0.9 ** (k + 1))) / (math.sqrt(v / (1 - 0.999 ** (k + 1))) + 1e-8)
        ref_w.append(w)
    assert float(result.model.w) == pytest.approx(ref_w[-1], rel=1e-10)
    np.testing.assert_allclose(result.history["loss"], ref_loss, rtol=1e-10)
    assert ref_loss[-1] < 0.6 * ref_loss[0]  # it trains
    h = result.history
    assert h["step"] == list(range(num_steps))
    assert len(h["time"]) == num_steps and all(np.diff(h["time"]) >= 0)
    assert len(h["compile_seconds"]) == 1 and h["compile_seconds"][0] > 0
    assert h["val_step"] == []
    # no progress bar when disabled
    fit(Tiny(jnp.asarray(0.01)), eqx.Partial(counting_loss, OP), batch_fn, opt, 2, progress=False)
    assert capsys.readouterr().err == ""


def test_interrupted_run_resumes_bitwise(tmp_path):
    num_steps = 7
    opt = default_optimizer(0.02, num_steps=num_steps, warmup=2)
    loss_fn = reconstruction_loss_fn(OP)
    val = batch_fn(1000)

    def validate_fn(model):
        xs = jax.vmap(lambda y: model(y, OP))(val.y)
        return {"psnr": float(jnp.mean(jax.vmap(psnr)(xs, val.x))), "mse": float(jnp.mean((xs - val.x) ** 2))}

    model0 = ConvNet(jax.random.key(0))
    kwargs = dict(validate_fn=validate_fn, validate_every=3, progress=False, config={"model": "ConvNet"})
    full = fit(model0, loss_fn, batch_fn, opt, num_steps, **kwargs)

    class Interrupt(Exception):
        pass

    def interrupted(k):
        if k == 5:
            raise Interrupt
        return batch_fn(k)

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(model0, loss_fn, interrupted, opt, num_steps, checkpoint_dir=run, checkpoint_every=3, **kwargs)
    assert latest_checkpoint(run).name == "step_00000003"
    # resume: a fresh model is only the template; the checkpoint's parameters, state and step are used
    resumed = fit(ConvNet(jax.random.key(1)), loss_fn, batch_fn, opt, num_steps, checkpoint_dir=run,
                  checkpoint_every=3, **kwargs)
    for a, b in zip(jax.tree.leaves((full.model, full.opt_state)), jax.tree.leaves((resumed.model, resumed.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("step", "loss", "val_step", "val_psnr", "val_mse"):
        assert full.history[key] == resumed.history[key], key
    assert full.history["val_step"] == [3, 6, 7]
    assert len(resumed.history["compile_seconds"]) == 2  # the first run and the resumed one
    assert sorted(p.name for p in run.glob("step_*")) == ["step_00000003", "step_00000006", "step_00000007"]
    # a finished run is not continued; resume=False starts over
    done = fit(model0, loss_fn, interrupted, opt, num_steps, checkpoint_dir=run, **kwargs)
    np.testing.assert_array_equal(done.model.conv.weight, full.model.conv.weight)
    fresh = fit(model0, loss_fn, batch_fn, opt, 2, checkpoint_dir=tmp_path / "other", resume=False, progress=False)
    assert fresh.history["step"] == [0, 1]
    assert fresh.history["loss"] == full.history["loss"][:2]


def test_time_limit_stops_with_a_checkpoint_and_resumes_bitwise(tmp_path, monkeypatch):
    num_steps = 6
    opt = default_optimizer(0.02, num_steps=num_steps)
    loss_fn = reconstruction_loss_fn(OP)
    model0 = ConvNet(jax.random.key(0))
    full = fit(model0, loss_fn, batch_fn, opt, num_steps, progress=False)
    # a clock that advances 1 s per reading: with a 3.5 s limit the run stops after a few steps
    import jaxrecon.train.loop as loop

    ticks = iter(range(10**6))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(ticks)))
    run = tmp_path / "run"
    first = fit(model0, loss_fn, batch_fn, opt, num_steps, checkpoint_dir=run, progress=False, time_limit=3.5)
    stopped = first.history["step"][-1] + 1
    assert 1 <= stopped < num_steps
    assert latest_checkpoint(run).name == f"step_{stopped:08d}"
    monkeypatch.undo()
    resumed = fit(ConvNet(jax.random.key(1)), loss_fn, batch_fn, opt, num_steps, checkpoint_dir=run, progress=False)
    assert resumed.history["step"] == list(range(num_steps))
    assert resumed.history["loss"] == full.history["loss"]
    for a, b in zip(jax.tree.leaves((full.model, full.opt_state)), jax.tree.leaves((resumed.model, resumed.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="time_limit must be a positive number of seconds or None, got 0"):
        fit(model0, loss_fn, batch_fn, opt, 1, time_limit=0)


def test_keyboard_interrupt_checkpoints_the_steps_done(tmp_path):
    num_steps = 6
    opt = default_optimizer(0.02, num_steps=num_steps)
    loss_fn = reconstruction_loss_fn(OP)
    model0 = ConvNet(jax.random.key(0))
    full = fit(model0, loss_fn, batch_fn, opt, num_steps, progress=False)

    def interrupted(k):
        if k == 4:
            raise KeyboardInterrupt
        return batch_fn(k)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(model0, loss_fn, interrupted, opt, num_steps, checkpoint_dir=run, checkpoint_every=100, progress=False)
    assert latest_checkpoint(run).name == "step_00000004"  # steps 0-3 were done; none was checkpointed before
    resumed = fit(model0, loss_fn, batch_fn, opt, num_steps, checkpoint_dir=run, progress=False)
    assert resumed.history["loss"] == full.history["loss"]
    for a, b in zip(jax.tree.leaves(full.model), jax.tree.leaves(resumed.model)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_validation():
    opt = optax.sgd(0.1)
    model = Tiny(jnp.asarray(1.0))
    loss_fn = reconstruction_loss_fn(OP)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation, got function"):
        fit(model, loss_fn, batch_fn, lambda g: g, 1)
    with pytest.raises(ValueError, match="num_steps must be an int >= 0, got -1"):
        fit(model, loss_fn, batch_fn, opt, -1)
    with pytest.raises(ValueError, match="validate_every must be an int >= 1, got 0"):
        fit(model, loss_fn, batch_fn, opt, 1, validate_every=0)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1 or None, got 2.5"):
        fit(model, loss_fn, batch_fn, opt, 1, checkpoint_every=2.5)
    with pytest.raises(TypeError, match="callables loss_fn"):
        fit(model, None, batch_fn, opt, 1)
    with pytest.raises(ValueError, match="at least one floating-point array"):
        fit({"n": jnp.arange(3)}, loss_fn, batch_fn, opt, 1)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        fit(model, loss_fn, batch_fn, opt, 1, mesh="cpu")
    with pytest.raises(TypeError, match="config must be a dict"):
        fit(model, loss_fn, batch_fn, opt, 1, config=[1])
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        default_optimizer(1e-3, num_steps=0)
    with pytest.raises(ValueError, match=r"warmup must be an int in \[0, num_steps\) = \[0, 10\), got 10"):
        default_optimizer(1e-3, num_steps=10, warmup=10)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        default_optimizer(-1.0, num_steps=10)
    with pytest.raises(ValueError, match=r"b2 must be a number in \[0, 1\), got 1.0"):
        default_optimizer(1e-3, num_steps=10, b2=1.0)
    with pytest.raises(ValueError, match="clip must be a positive number or None"):
        default_optimizer(1e-3, num_steps=10, clip=0)
    # zero steps: nothing to do, the model comes back unchanged
    assert fit(model, loss_fn, batch_fn, opt, 0, progress=False).model is not None

