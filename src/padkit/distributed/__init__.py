"""Scale out: batched PAD generation over a pool of workers on a Ray cluster, and the resumable task runner."""

from padkit.distributed.jobs import Batch, ModelSpec, Task, run_batch, run_local, run_tasks
from padkit.distributed.ray_pool import RayPool, RaySettings

__all__ = ["Batch", "ModelSpec", "RayPool", "RaySettings", "Task", "run_batch", "run_local", "run_tasks"]
