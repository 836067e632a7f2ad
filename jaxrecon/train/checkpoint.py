r"""Checkpoints as data: array leaves in `equinox` leaf files plus a JSON config, written atomically.

Layout of a checkpoint directory (one per saved step)::

    directory/
      latest                  # text: the name of the newest complete checkpoint, e.g. "step_00001000"
      step_00001000/
        model.eqx             # equinox.tree_serialise_leaves(model)
        opt_state.eqx         # the optimizer state (if saved)
        config.json           # {"config", "step", "history", "versions", "leaves": shapes/dtypes}
        manifest.json         # {"sha256": {file name: SHA-256 of its bytes}} for the files above

Nothing is pickled: loading needs a *template* pytree of the same structure (e.g. a freshly
initialised model built from `load_config(path)`), whose leaves are replaced by the stored arrays.
A checkpoint appears only complete: it is written into a hidden temporary sibling directory,
flushed to disk (`fsync`) and renamed into place; `latest` is replaced the same way. Only the
newest `keep` checkpoints are kept; an old one is first renamed to a hidden name, then deleted, so
that a save killed while pruning never leaves a half-deleted folder that looks complete, and
hidden leftovers of killed saves are removed by the next save. Loading verifies every file against
the manifest and names the one that is corrupt (checkpoints written before manifests existed load
without this check).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from jaxrecon._version import __version__

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "load_config"]

_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_TMP_PREFIX = ".tmp-"
_FORMAT = 1


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (best effort for directories on odd filesystems)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _to_host(x):
    """A replicated multi-process array is read from this process's own copy; other leaves pass."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError(
                "save_checkpoint expects replicated (or single-process) arrays, got an array sharded "
                f"across processes with sharding {x.sharding}"
            )
        return np.asarray(x.addressable_data(0))
    return x


def _leaf_info(tree) -> list[dict]:
    """Path, shape and dtype of every array leaf (what `tree_serialise_leaves` stores)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [
        {"path": jax.tree_util.keystr(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
        for path, leaf in leaves
        if eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)
    ]


def _json_default(obj):
    if isinstance(obj, (np.generic, jax.Array, np.ndarray)):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__} ({obj!r:.80})")


def _to_json(payload: dict, what: str) -> str:
    try:
        return json.dumps(payload, indent=1, default=_json_default)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint expects {what} made of JSON data (dicts, lists, str, numbers): {e}") from None


def _write_bytes(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _replace_file(path: Path, text: str) -> None:
    """Atomically replace `path` by a file holding `text` (temporary file + fsync + os.replace)."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove(path: Path, directory: Path) -> None:
    """Delete a checkpoint folder: rename it to a hidden name first (atomic), so it never looks half there."""
    hidden = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}prune-", dir=directory))
    os.replace(path, hidden / path.name)
    shutil.rmtree(hidden, ignore_errors=True)


def _steps(directory: Path) -> dict[int, Path]:
    """Complete checkpoints in `directory`: step -> path."""
    out = {}
    if directory.is_dir():
        for p in directory.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / "config.json").is_file():
                out[int(m.group(1))] = p
    return out


def save_checkpoint(
    directory,
    *,
    model,
    opt_state=None,
    step: int,
    config: dict,
    history: dict | None = None,
    keep: int | None = 3,
) -> Path:
    """Save `model` (and `opt_state`) at `step` into `directory/step_{step:08d}/`, atomically.

    Writes `model.eqx` and `opt_state.eqx` with `equinox.tree_serialise_leaves` and `config.json`
    with `config`, `step`, `history`, the jaxrecon/jax versions and the path, shape and dtype of every
    array leaf. The directory is assembled under a temporary name, fsynced and renamed into place,
    then the `latest` file is atomically replaced. Re-saving a step replaces that checkpoint.
    Afterwards all but the newest `keep` checkpoints (by step) are deleted; the one just written is
    always kept. In a multi-process run call it from one process only (e.g. `jax.process_index() == 0`);
    arrays must be replicated or local.

    Args:
        directory: where checkpoints live (created if missing).
        model: any pytree (typically an `equinox.Module`); its array leaves are stored.
        opt_state: optional optimizer state pytree.
        step: non-negative int (the number of completed training steps).
        config: a JSON-serialisable dict (hyperparameters needed to rebuild the model).
        history: optional JSON-serialisable dict (training curves).
        keep: how many checkpoints to keep (a positive int), or None to keep all.

    Returns:
        The path of the new checkpoint directory.

    Example:
        >>> import tempfile
        >>> model = {"w": jnp.arange(3.0)}
        >>> path = save_checkpoint(tempfile.mkdtemp(), model=model, step=7, config={"width": 3})
        >>> path.name
        'step_00000007'
        >>> load_checkpoint(path, model_like=model)[2:4]
        (7, {'width': 3})
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if history is not None and not isinstance(history, dict):
        raise TypeError(f"history must be a dict or None, got {type(history).__name__}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None, got {keep!r}")
    step = int(step)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"

    model = jax.tree.map(_to_host, model)
    opt_state = None if opt_state is None else jax.tree.map(_to_host, opt_state)
    meta = {
        "format": _FORMAT,
        "step": step,
        "config": config,
        "history": history,
        "versions": {"jaxrecon": __version__, "jax": jax.__version__, "equinox": eqx.__version__},
        "x64": bool(jax.config.jax_enable_x64),
        "leaves": {"model": _leaf_info(model), "opt_state": None if opt_state is None else _leaf_info(opt_state)},
    }
    text = _to_json(meta, "config and history")

    for stale in directory.glob(f"{_TMP_PREFIX}*"):  # leftovers of a save or a pruning that was killed
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=directory))
    try:
        _write_bytes(tmp / "model.eqx", lambda f: eqx.tree_serialise_leaves(f, model))
        if opt_state is not None:
            _write_bytes(tmp / "opt_state.eqx", lambda f: eqx.tree_serialise_leaves(f, opt_state))
        _write_bytes(tmp / "config.json", lambda f: f.write(text.encode()))
        manifest = {"sha256": {p.name: _sha256(p) for p in sorted(tmp.iterdir())}}
        _write_bytes(tmp / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        _fsync(tmp)
        final = directory / name
        if final.exists():  # re-saving a step: move the old one aside first (rename is atomic)
            old = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}old-", dir=directory))
            os.replace(final, old / name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(directory)
    _replace_file(directory / "latest", name + "\n")

    if keep is not None:
        steps = sorted(_steps(directory))
        for s in steps[:-keep]:
            if s != step:
                _remove(directory / f"step_{s:08d}", directory)
    return final


def latest_checkpoint(directory) -> Path | None:
    """The newest complete checkpoint in `directory` (named by its `latest` file), or None if there is none.

    If `latest` is missing or names a checkpoint that no longer exists, the one with the largest step
    is returned.

    Example:
        >>> import tempfile
        >>> latest_checkpoint(tempfile.mkdtemp()) is None
        True
    """
    directory = Path(directory)
    latest = directory / "latest"
    if latest.is_file():
        name = latest.read_text().strip()
        if _STEP_DIR.match(name) and (directory / name / "config.json").is_file():
            return directory / name
    steps = _steps(directory)
    return steps[max(steps)] if steps else None


def _resolve(path) -> Path:
    """A checkpoint directory, or a directory of checkpoints (-> its latest)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is not None:
            return found
        raise FileNotFoundError(
            f"expected a checkpoint directory (with config.json) or a directory of step_* checkpoints, "
            f"got {str(path)!r}, which contains neither"
        )
    raise FileNotFoundError(f"checkpoint path {str(path)!r} does not exist")


def _verify(path: Path) -> None:
    """Check every file of a checkpoint against its manifest (if it has one), naming a corrupt file."""
    file = path / "manifest.json"
    if not file.is_file():
        return  # written before manifests existed
    try:
        expected = json.loads(file.read_text())["sha256"]
        if not isinstance(expected, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"checkpoint manifest {str(file)!r} is corrupt (expected JSON with a 'sha256' table)") from None
    for name, digest in expected.items():
        if not (path / name).is_file():
            raise ValueError(f"checkpoint {str(path)!r} is incomplete: {name} is listed in its manifest but missing")
        if _sha256(path / name) != digest:
            raise ValueError(
                f"checkpoint {str(path)!r} is corrupt: {name} does not match the SHA-256 in its manifest "
                "(the file was truncated or altered after it was written)"
            )


_META_KEYS = {"format": int, "step": int, "config": dict, "leaves": dict}


def _read_meta(path: Path) -> dict:
    file = path / "config.json"
    _verify(path)
    try:
        meta = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint file {str(file)!r} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{file} is not a jaxrecon checkpoint (format {_FORMAT})")
    for key, kind in _META_KEYS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(
                f"checkpoint file {str(file)!r}: entry {key!r} should be a {kind.__name__}, got "
                f"{type(meta.get(key)).__name__ if key in meta else 'nothing'}"
            )
    if not isinstance(meta["leaves"].get("model"), list):
        raise ValueError(f"checkpoint file {str(file)!r}: entry 'leaves' has no list of model leaves")
    return meta


def load_config(path) -> dict:
    """The `config` dict saved with a checkpoint (`path`: a checkpoint, or a directory of them -> latest).

    Use it to rebuild the model template before `load_checkpoint`.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = save_checkpoint(d, model={"w": jnp.zeros(2)}, step=1, config={"lr": 0.1})
        >>> load_config(d)
        {'lr': 0.1}
    """
    return _read_meta(_resolve(path))["config"]


def _check_template(stored: list[dict] | None, like, what: str, path: Path) -> None:
    """Compare the stored leaves with the template's, naming the first mismatches."""
    if stored is None:
        raise ValueError(f"checkpoint {str(path)!r} has no {what} (it was saved without one), but a template was given")
    expected = _leaf_info(like)
    if len(stored) != len(expected):
        raise ValueError(
            f"{what} template does not match checkpoint {str(path)!r}: the checkpoint has {len(stored)} array "
            f"leaves, the template {len(expected)}"
        )
    bad = [
        f"{e['path'] or '<root>'}: checkpoint {tuple(s['shape'])} {s['dtype']}, template {tuple(e['shape'])} {e['dtype']}"
        for s, e in zip(stored, expected)
        if (s["shape"], s["dtype"]) != (e["shape"], e["dtype"])
    ]
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"{what} template does not match checkpoint {str(path)!r}; shape/dtype mismatch at "
            + "; ".join(bad[:5])
            + more
        )


def _deserialise(file: Path, like, what: str):
    if not file.is_file():
        raise ValueError(f"checkpoint file {str(file)!r} is missing")
    try:
        with open(file, "rb") as f:
            return eqx.tree_deserialise_leaves(f, like)
    except RuntimeError as e:  # equinox's own type/shape/dtype check
        raise ValueError(f"{what} template does not match {str(file)!r}: {e}") from None
    except (ValueError, EOFError, OSError) as e:  # truncated or garbled without a manifest to say so
        raise ValueError(f"checkpoint file {str(file)!r} cannot be read ({type(e).__name__}: {e})") from None


def load_checkpoint(path, *, model_like, opt_state_like=None) -> tuple[Any, Any, int, dict, dict | None]:
    """Load a checkpoint into templates: `(model, opt_state, step, config, history)`.

    Args:
        path: a checkpoint directory (`.../step_00001000`), or a directory of checkpoints (its
            `latest` is loaded).
        model_like: a pytree with the structure, shapes and dtypes of the saved model (e.g. the
            freshly initialised model, or `eqx.filter_eval_shape` of its constructor).
        opt_state_like: the same for the optimizer state (e.g. `optimizer.init(params)`), or None
            to skip it (then the returned `opt_state` is None).

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        ValueError: a file is corrupt or missing (named; checked against the manifest's SHA-256),
            `config.json` is malformed (the file and the entry are named), or a template does not
            match (the message names the leaves, with the stored and the expected shape and dtype).

    Example:
        see `save_checkpoint`.
    """
    path = _resolve(path)
    meta = _read_meta(path)
    _check_template(meta["leaves"]["model"], model_like, "model", path)
    model = _deserialise(path / "model.eqx", model_like, "model")
    opt_state = None
    if opt_state_like is not None:
        _check_template(meta["leaves"]["opt_state"], opt_state_like, "opt_state", path)
        opt_state = _deserialise(path / "opt_state.eqx", opt_state_like, "opt_state")
    return model, opt_state, int(meta["step"]), meta["config"], meta["history"]
