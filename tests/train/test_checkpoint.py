"""Checkpoints: exact round trip, JSON metadata, atomic writes, retention, template mismatch errors."""

import doctest
import json
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrecon.train import checkpoint as ckpt
from jaxrecon.train.checkpoint import latest_checkpoint, load_checkpoint, load_config, save_checkpoint


def _model(key=0, width=4, dtype=jnp.float64):
    return eqx.nn.MLP(3, 2, width, 1, key=jax.random.key(key), dtype=dtype)


def _params(model):
    return eqx.filter(model, eqx.is_inexact_array)


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tmp_path):
    model = _model(0)
    opt = optax.adam(1e-2)
    state = opt.init(_params(model))
    # one real update so that the state holds non-trivial moments and a count
    grads = jax.tree.map(jnp.ones_like, _params(model))
    updates, state = opt.update(grads, state, _params(model))
    model = eqx.apply_updates(model, updates)
    history = {"step": [0, 1], "loss": [1.5, np.float64(0.25)], "val_psnr": [float("inf")]}
    path = save_checkpoint(tmp_path, model=model, opt_state=state, step=12, config={"width": 4, "act": "relu"},
                           history=history)
    assert path == tmp_path / "step_00000012"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "manifest.json", "model.eqx", "opt_state.eqx"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000012"
    meta = json.loads((path / "config.json").read_text())
    assert meta["step"] == 12 and meta["config"] == {"width": 4, "act": "relu"}
    assert meta["versions"]["jaxrecon"] and meta["x64"] is True
    assert {"path": ".layers[0].weight", "shape": [4, 3], "dtype": "float64"} in meta["leaves"]["model"]
    # templates: a differently initialised model and a fresh optimizer state
    template = _model(1)
    loaded, loaded_state, step, config, hist = load_checkpoint(
        tmp_path, model_like=template, opt_state_like=opt.init(_params(template))
    )
    _assert_trees_equal(loaded, model)
    _assert_trees_equal(loaded_state, state)
    assert int(loaded_state[0].count) == 1
    assert step == 12 and config == {"width": 4, "act": "relu"}
    assert hist == {"step": [0, 1], "loss": [1.5, 0.25], "val_psnr": [float("inf")]}
    # the loaded model works like the original; shape-only templates work too
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(loaded(x), model(x))
    abstract = eqx.filter_eval_shape(_model, 5)
    _assert_trees_equal(load_checkpoint(path, model_like=abstract)[0], model)
    assert load_checkpoint(path, model_like=template)[1] is None
    assert load_config(path) == load_config(tmp_path) == {"width": 4, "act": "relu"}


def test_retention_latest_and_resave(tmp_path):
    model = {"w": jnp.zeros(2)}
    for step in range(1, 6):
        save_checkpoint(tmp_path, model={"w": jnp.full(2, float(step))}, step=step, config={}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000004", "step_00000005"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000005"
    # re-saving a step replaces it; an older step saved later becomes `latest` and is kept
    save_checkpoint(tmp_path, model={"w": jnp.full(2, 9.0)}, step=5, config={"again": True}, keep=2)
    assert load_config(tmp_path) == {"again": True}
    np.testing.assert_array_equal(load_checkpoint(tmp_path, model_like=model)[0]["w"], 9.0)
    save_checkpoint(tmp_path, model=model, step=2, config={}, keep=2)
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000002"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000004", "step_00000005"]
    # `latest` naming a missing checkpoint: fall back to the largest step; keep=None keeps everything
    (tmp_path / "latest").write_text("step_00000099\n")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000005"
    for step in range(10, 14):
        save_checkpoint(tmp_path, model=model, step=step, config={}, keep=None)
    assert len(list(tmp_path.glob("step_*"))) == 7
    assert latest_checkpoint(tmp_path / "nowhere") is None
    assert latest_checkpoint(tmp_path / "step_00000002") is None


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model = {"w": jnp.arange(3.0)}
    save_checkpoint(tmp_path, model=model, step=1, config={})

    def broken(f, tree):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.eqx, "tree_serialise_leaves", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model=model, step=2, config={})
    monkeypatch.undo()
    # no half-written checkpoint, no temporary directory, `latest` unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000001"
    # an incomplete directory (e.g. copied by hand, no config.json) is never picked up
    (tmp_path / "step_00000003").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000001"
    # non-JSON config: nothing written either
    with pytest.raises(TypeError, match="JSON data.*object"):
        save_checkpoint(tmp_path, model=model, step=4, config={"f": object()})
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "step_00000004").exists()


def test_corrupt_files_are_named(tmp_path):
    model = _model(0)
    path = save_checkpoint(tmp_path, model=model, step=3, config={"w": 4})
    manifest = json.loads((path / "manifest.json").read_text())["sha256"]
    assert set(manifest) == {"model.eqx", "config.json"}
    blob = bytearray((path / "model.eqx").read_bytes())
    blob[-3] ^= 0x10  # a flipped bit near the end: a weight would change silently without the manifest
    (path / "model.eqx").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"corrupt: model.eqx does not match the SHA-256"):
        load_checkpoint(tmp_path, model_like=model)
    (path / "model.eqx").write_bytes(bytes(blob[: len(blob) // 2]))  # truncated
    with pytest.raises(ValueError, match=r"corrupt: model.eqx"):
        load_checkpoint(path, model_like=model)
    (path / "model.eqx").unlink()
    with pytest.raises(ValueError, match=r"incomplete: model.eqx is listed in its manifest but missing"):
        load_checkpoint(path, model_like=model)


def test_malformed_config_names_the_file_and_the_entry(tmp_path):
    model = {"w": jnp.zeros(2)}
    path = save_checkpoint(tmp_path, model=model, step=1, config={})
    (path / "manifest.json").unlink()  # as a checkpoint from before manifests: only the JSON checks apply
    meta = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"config.json' is not valid JSON"):
        load_config(path)
    del meta["leaves"]
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config.json': entry 'leaves' should be a dict, got nothing"):
        load_checkpoint(path, model_like=model)
    (path / "config.json").write_text(json.dumps(dict(meta, leaves={}, step="3")))
    with pytest.raises(ValueError, match=r"entry 'step' should be a int, got str"):
        load_config(path)
    (path / "config.json").write_text(json.dumps(dict(meta, leaves={"model": []})))
    (path / "model.eqx").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"model.eqx' cannot be read|template does not match"):
        load_checkpoint(path, model_like=model)


def test_leftovers_of_killed_saves_are_cleaned_and_pruning_never_leaves_a_partial_step(tmp_path, monkeypatch):
    model = {"w": jnp.zeros(2)}
    (tmp_path / ".tmp-step_00000001-abc").mkdir(parents=True)  # a save killed mid-write
    (tmp_path / ".tmp-step_00000001-abc" / "model.eqx").write_bytes(b"partial")
    save_checkpoint(tmp_path, model=model, step=1, config={}, keep=1)
    assert not list(tmp_path.glob(".tmp-*"))
    # a kill during pruning: the old step has already been renamed away, so it can never look complete
    import shutil

    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model=model, step=2, config={}, keep=1)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002"]
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    save_checkpoint(tmp_path, model=model, step=3, config={}, keep=1)
    assert not list(tmp_path.glob(".tmp-*"))
    assert shutil.rmtree  # (the real one is back)


def test_template_mismatch_and_missing_paths(tmp_path):
    model = _model(0)
    opt = optax.sgd(0.1, momentum=0.9)
    save_checkpoint(tmp_path, model=model, opt_state=opt.init(_params(model)), step=3, config={})
    with pytest.raises(ValueError, match=r"\.layers\[0\]\.weight: checkpoint \(4, 3\) float64, template \(5, 3\) float64"):
        load_checkpoint(tmp_path, model_like=_model(0, width=5))
    with pytest.raises(ValueError, match=r"checkpoint \(4, 3\) float64, template \(4, 3\) float32"):
        load_checkpoint(tmp_path, model_like=_model(0, dtype=jnp.float32))
    with pytest.raises(ValueError, match="the checkpoint has 4 array leaves, the template 1"):
        load_checkpoint(tmp_path, model_like={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="opt_state template does not match"):
        load_checkpoint(tmp_path, model_like=model, opt_state_like=optax.adam(0.1).init(_params(model)))
    save_checkpoint(tmp_path / "no_state", model=model, step=1, config={})
    with pytest.raises(ValueError, match="has no opt_state"):
        load_checkpoint(tmp_path / "no_state", model_like=model, opt_state_like=opt.init(_params(model)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing", model_like=model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="contains neither"):
        load_config(tmp_path / "empty")


def test_argument_validation(tmp_path):
    model = {"w": jnp.zeros(2)}
    with pytest.raises(ValueError, match="step must be a non-negative int, got -1"):
        save_checkpoint(tmp_path, model=model, step=-1, config={})
    with pytest.raises(ValueError, match="step must be a non-negative int, got 1.0"):
        save_checkpoint(tmp_path, model=model, step=1.0, config={})
    with pytest.raises(TypeError, match="config must be a dict, got list"):
        save_checkpoint(tmp_path, model=model, step=1, config=[])
    with pytest.raises(ValueError, match="keep must be a positive int or None, got 0"):
        save_checkpoint(tmp_path, model=model, step=1, config={}, keep=0)
    with pytest.raises(TypeError, match="history must be a dict or None"):
        save_checkpoint(tmp_path, model=model, step=1, config={}, history=[1])


def test_docstring_examples():
    result = doctest.testmod(sys.modules["jaxrecon.train.checkpoint"], extraglobs={"jnp": jnp})
    assert result.attempted > 0 and result.failed == 0
