r"""Several processes (hosts) training one model: start-up, each process's part of a batch, main-process I/O.

Multi-controller JAX: the same program runs in $P$ processes, each owning its local devices; after
`initialize_distributed` a mesh over `jax.devices()` spans all of them (`data_parallel_mesh()`).
Data-parallel training then splits every global batch of $B$ samples by process: process $p$
produces only rows $[pB/P, (p+1)B/P)$ (`process_rows`), `shard_batch` assembles the global array
from the processes' parts, and the jitted step all-reduces the gradient. The update equals the
single-process one on the same global batch, up to the order of the floating-point sums.

Only process 0 writes checkpoints and prints (`fit`, `jaxrecon train`); every process reads the
checkpoint it resumes from (a filesystem shared by all processes, as on a cluster), and `fit` checks
that they all resume from the same step. On CPU the collectives run over TCP (gloo, jax's default
`jax_cpu_collectives_implementation`); GPUs and TPUs use their own.

Example (two processes on one machine; on SLURM or Open MPI `jaxrecon train --distributed` finds
the addresses itself)::

    jaxrecon train --model lpd --coordinator-address 127.0.0.1:1234 --num-processes 2 --process-id 0 &
    jaxrecon train --model lpd --coordinator-address 127.0.0.1:1234 --num-processes 2 --process-id 1
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["initialize_distributed", "is_main_process", "process_rows", "local_part", "agree"]


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, local_device_ids=None,
                           initialization_timeout: int = 300) -> tuple[int, int]:
    """Start multi-process JAX (`jax.distributed.initialize`); returns `(process_index, process_count)`.

    Call it once per process, before any other JAX computation. Arguments left `None` are detected
    from the cluster's environment (SLURM, Open MPI, Cloud TPU; see `jax.distributed.initialize`);
    elsewhere pass `coordinator_address="host:port"` (process 0's machine and a free port),
    `num_processes` and `process_id`. `initialization_timeout` (seconds) bounds the wait for the
    other processes: a missing one is an error, not a hang.

    Example:
        >>> initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=0)  # doctest: +SKIP
        (0, 2)
    """
    for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"{name} must be an int >= {low} or None, got {value!r}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id must be below num_processes = {num_processes}, got {process_id}")
    if coordinator_address is not None and (not isinstance(coordinator_address, str)
                                            or not coordinator_address.rpartition(":")[2].isdigit()):
        raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}")
    jax.distributed.initialize(
        coordinator_address, None if num_processes is None else int(num_processes),
        None if process_id is None else int(process_id), local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return jax.process_index(), jax.process_count()


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes checkpoints and logs (always true with one process)."""
    return jax.process_index() == 0


def process_rows(batch_size: int) -> slice:
    """The rows of a global batch of `batch_size` samples that this process produces: `[pB/P, (p+1)B/P)`.

    Example:
        >>> process_rows(8)  # one process: all rows
        slice(0, 8, None)
    """
    count = jax.process_count()
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % count:
        raise ValueError(f"the batch size must be divisible by the {count} processes, got {batch_size}")
    part = batch_size // count
    start = jax.process_index() * part
    return slice(start, start + part)


def local_part(batch):
    """This process's rows (`process_rows`) of every array leaf of a global batch (leading axis).

    For batch functions that draw the whole global batch at once (e.g. one noise key for all of it):
    each process computes it and keeps its part, so the training step sees exactly the batch a single
    process would. Other leaves pass unchanged.

    Example:
        >>> local_part({"x": jnp.arange(4.0)})["x"].shape  # one process: the whole batch
        (4,)
    """
    sizes = {x.shape[0] for x in jax.tree.leaves(batch) if hasattr(x, "shape") and getattr(x, "ndim", 0)}
    if len(sizes) > 1:
        raise ValueError(f"local_part expects array leaves that share the leading batch size, got {sorted(sizes)}")
    if not sizes or jax.process_count() == 1:
        return batch
    rows = process_rows(sizes.pop())
    return jax.tree.map(lambda x: x[rows] if hasattr(x, "shape") and getattr(x, "ndim", 0) else x, batch)


def agree(value: bool) -> bool:
    """Process 0's `value`, on every process (a collective: every process must call it at the same point).

    For decisions that must be the same everywhere, such as stopping at a time limit: a process that
    stops while another runs one more step would leave that one waiting for its peers.
    """
    if jax.process_count() == 1:
        return bool(value)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(value))))
