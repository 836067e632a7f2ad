"""Training: data generated on the fly, the optax training loop, checkpoints, evaluation, data parallelism."""

from .checkpoint import latest_checkpoint, load_checkpoint, load_config, save_checkpoint
from .data import SPLIT_ID, CTData, Sample, batch_keys, shepp_logan_sample, split_key
from .evaluate import evaluate, reconstruct
from .lodopab import LoDoPaBData, evaluate_lodopab, lodopab_data_config
from .loop import TrainResult, default_optimizer, fit, reconstruction_loss, reconstruction_loss_fn
from .sharding import BATCH_AXIS, data_parallel_mesh, initialize_distributed, replicate, shard_batch

__all__ = [
    "BATCH_AXIS",
    "CTData",
    "LoDoPaBData",
    "SPLIT_ID",
    "Sample",
    "TrainResult",
    "batch_keys",
    "data_parallel_mesh",
    "default_optimizer",
    "evaluate",
    "evaluate_lodopab",
    "fit",
    "initialize_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "lodopab_data_config",
    "reconstruct",
    "reconstruction_loss",
    "reconstruction_loss_fn",
    "replicate",
    "save_checkpoint",
    "shard_batch",
    "split_key",
]
