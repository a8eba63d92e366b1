"""Ray actors that each load the models once and decode batches: generation spread over a cluster.

Plain Ray actors rather than Ray Data: a job here is a list of batches whose results must be written exactly
once, in any order, by the driver; an actor pool with one batch in flight per actor does that in a few lines.
Each actor restarts when its process dies (``max_restarts=-1``) and Ray re-runs the batch it was running
(``max_task_retries=-1``), so a lost worker costs time, never rows. Ray is an optional extra:
``pip install 'padkit[ray]'``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from padkit.distributed.jobs import Batch, ModelSpec, OnResult, load_pads, run_batch
from padkit.errors import PadkitError
from padkit.models.loading import resolve_model_dir


def import_ray():
    """Ray, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise PadkitError("--ray needs Ray, an optional extra: pip install 'padkit[ray]'") from err
    return ray


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a job runs on Ray (the ``--ray`` CLI options are derived from these fields)."""

    ray: bool = field(
        default=False,
        metadata={"help": "Spread generation over Ray actors (pip install 'padkit\\[ray]').", "flags": ("--ray",)},
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "Join a running Ray cluster (e.g. 'auto' or HOST:6379); default: start one."}
    )
    num_workers: int = field(default=2, metadata={"help": "Ray actors, each with its own model copy."})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs per Ray actor (its torch threads)."})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs Ray reserves per actor."})

    def pool(self, models: dict[str, ModelSpec]) -> RayPool:
        """A :class:`RayPool` of these settings for ``models``."""
        return RayPool(models, self.num_workers, self.ray_address, self.cpus_per_worker, self.gpus_per_worker)


class _Worker:
    """One actor: the models, loaded once, and a torch thread budget matching its CPU reservation."""

    def __init__(self, models: dict[str, ModelSpec], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.pads = load_pads(models)

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: Batch):
        return run_batch(self.pads, batch)


class RayPool:
    """A pool of ``num_workers`` Ray actors decoding :class:`Batch` es, one batch in flight per actor.

    ``address`` joins a running cluster (``ray start --head`` prints it; ``"auto"`` finds a local one); without
    it a local Ray instance is started. ``gpus_per_worker`` reserves GPUs for each actor (Ray sets
    ``CUDA_VISIBLE_DEVICES`` for it).

    Example::

        pool = RayPool({"main": ModelSpec("smollm2-135m-instruct")}, num_workers=2)
        pool.map([Batch(["Hi!"], ["concise"])], lambda batch, gens, seconds: print(gens[0].text))
    """

    def __init__(
        self,
        models: dict[str, ModelSpec],
        num_workers: int = 2,
        address: str | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
    ) -> None:
        if num_workers < 1:
            raise PadkitError(f"--num-workers must be at least 1, got {num_workers}")
        for spec in models.values():  # fail here, not in every actor, on a model that cannot be found
            resolve_model_dir(spec.base)
            if spec.rm not in (None, "self"):
                resolve_model_dir(spec.rm)
        self.ray = import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        self._check_resources(num_workers, {"CPU": cpus_per_worker, "GPU": gpus_per_worker})
        # Workers decode with the driver's padkit settings (kernel policy, cache): a worker that measured
        # another GEMM kernel for itself would sample another text from the same seed.
        padkit_env = {k: v for k, v in os.environ.items() if k.startswith("PADKIT_")}
        actor = self.ray.remote(_Worker).options(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=-1,
            max_task_retries=-1,
            runtime_env={"env_vars": padkit_env} if padkit_env else None,
        )
        self.workers = [actor.remote(models, int(cpus_per_worker)) for _ in range(num_workers)]

    def _check_resources(self, num_workers: int, each: dict[str, float], wait_s: float = 15.0) -> None:
        """Fail with a clear message, instead of waiting forever, when the cluster cannot place every actor.

        Resources of actors killed a moment ago come back asynchronously, hence the short wait."""
        deadline = time.monotonic() + wait_s
        while True:
            free = self.ray.available_resources()
            short = {r: n for r, n in each.items() if n and free.get(r, 0) < n * num_workers}
            if not short:
                return
            if time.monotonic() > deadline:
                resource, n = next(iter(short.items()))
                raise PadkitError(
                    f"{num_workers} workers x {n:g} {resource} need {n * num_workers:g} {resource}s, but the Ray "
                    f"cluster has {free.get(resource, 0):g} free: use fewer --num-workers or "
                    f"--{resource.lower()}s-per-worker"
                )
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The workers' process ids (for monitoring, and for tests that kill one)."""
        return self.ray.get([w.pid.remote() for w in self.workers])

    def map(self, batches: Iterable[Batch], on_result: OnResult) -> None:
        """Decode every batch; ``on_result(batch, generations, seconds)`` runs here, once per batch."""
        todo, idle, busy = deque(batches), list(self.workers), {}
        while todo or busy:
            while idle and todo:
                worker, batch = idle.pop(), todo.popleft()
                busy[worker.run.remote(batch)] = (worker, batch)
            (ready,), _ = self.ray.wait(list(busy), num_returns=1)
            worker, batch = busy.pop(ready)
            try:
                gens, seconds = self.ray.get(ready)
            except self.ray.exceptions.RayTaskError as err:
                raise PadkitError(f"a Ray worker failed on a batch: {err.cause if err.cause else err}") from err
            idle.append(worker)
            on_result(batch, gens, seconds)

    def close(self) -> None:
        """Stop the actors and free their resources (the cluster stays up)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
