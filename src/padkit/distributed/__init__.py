"""Scale out: batched PAD generation over a pool of workers on a Ray cluster."""

from padkit.distributed.jobs import Batch, ModelSpec, run_batch, run_local
from padkit.distributed.ray_pool import RayPool

__all__ = ["Batch", "ModelSpec", "RayPool", "run_batch", "run_local"]
