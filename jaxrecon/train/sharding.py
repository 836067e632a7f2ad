r"""Data-parallel training over devices: a 1-D mesh, a sharded batch, replicated parameters.

Data parallelism with `jax.sharding`: the batch's leading axis is split over the mesh axis
`"batch"` (each device holds `batch_size / num_devices` samples), parameters and optimizer state
are replicated, and the *same* jitted training step runs unchanged: XLA (GSPMD) partitions it
and inserts the all-reduce of the gradient, which is a mean over the whole batch. So a step on
$n$ devices computes the same update as on one device (up to the order of the floating-point
sums).

Usage::

    mesh = data_parallel_mesh()                  # all devices, axis "batch"
    result = fit(model, loss_fn, batch_fn, optimizer, num_steps, mesh=mesh)

On several hosts, call `initialize_distributed()` (`distributed.py`) first in every process; the
mesh then spans the devices of all processes and each process passes its own rows of the global
batch (`process_rows`) to `shard_batch`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .distributed import initialize_distributed  # noqa: F401  (its former home; see distributed.py)

__all__ = ["BATCH_AXIS", "data_parallel_mesh", "shard_batch", "replicate"]

#: The name of the mesh axis the batch is split over.
BATCH_AXIS = "batch"


def data_parallel_mesh(devices=None) -> Mesh:
    """A 1-D `Mesh` over `devices` with the axis `"batch"`.

    Args:
        devices: a sequence of devices; default `jax.devices()` (all devices: on one host the
            local ones; after `initialize_distributed`, those of every process).

    Example:
        >>> mesh = data_parallel_mesh()
        >>> mesh.axis_names
        ('batch',)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be a non-empty sequence of jax devices, got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices!r}")
    return Mesh(np.asarray(devices, dtype=object), (BATCH_AXIS,))


def _check_mesh(mesh, name: str) -> int:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{name} expects a jax.sharding.Mesh (see data_parallel_mesh), got {type(mesh).__name__}")
    if BATCH_AXIS not in mesh.axis_names:
        raise ValueError(f"{name} expects a mesh with an axis {BATCH_AXIS!r}, got axes {mesh.axis_names}")
    return mesh.shape[BATCH_AXIS]


def shard_batch(batch, mesh: Mesh):
    """Place a batch pytree with its leading axis split over the mesh axis `"batch"`.

    Every array leaf must have the same leading size, divisible by the number of devices along
    `"batch"`. Non-array leaves are left as they are. With several processes each passes its local
    part; the global batch is their concatenation (`jax.make_array_from_process_local_data`).

    Example:
        >>> mesh = data_parallel_mesh()
        >>> xs = shard_batch(jnp.zeros((len(jax.devices()) * 2, 3)), mesh)
        >>> len(xs.sharding.device_set) == len(jax.devices())
        True
    """
    n = _check_mesh(mesh, "shard_batch")
    leaves = [x for x in jax.tree.leaves(batch) if hasattr(x, "shape") and hasattr(x, "dtype")]
    if not leaves:
        raise ValueError("shard_batch expects a pytree with at least one array leaf, got none")
    sizes = {x.shape[0] if x.ndim else None for x in leaves}
    if None in sizes:
        raise ValueError("shard_batch expects array leaves with a leading batch axis, got a scalar leaf")
    if len(sizes) != 1:
        raise ValueError(f"shard_batch expects all leaves to share the leading batch size, got sizes {sorted(sizes)}")
    size = sizes.pop() * jax.process_count()
    if size % n:
        raise ValueError(
            f"shard_batch expects a batch size divisible by the {n} devices of the mesh axis {BATCH_AXIS!r}, "
            f"got {size}"
        )
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

    def place(x):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(place, batch)


def replicate(tree, mesh: Mesh):
    """Place every array leaf of `tree` (parameters, optimizer state) on all devices of `mesh`.

    Example:
        >>> w = replicate({"w": jnp.ones(3)}, data_parallel_mesh())["w"]
        >>> w.sharding.is_fully_replicated
        True
    """
    _check_mesh(mesh, "replicate")
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, sharding) if isinstance(x, (jax.Array, np.ndarray)) else x, tree)
