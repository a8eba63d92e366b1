"""Group concurrent requests into batched PAD decodes, one worker thread, each row with its own preference.

By default (``continuous=True``) base, prompt and fusable PAD requests join a running batch between decode steps
(:class:`padkit.decoding.continuous.ContinuousBatch`): a request that arrives mid-batch starts at the next step.
What that loop does not serve (see :meth:`ContinuousBatch.serves`: other methods, seeded sampling, diagnostics,
a PersRM that cannot fuse) takes the static path below, between two steps of the running batch.

On the static path requests wait at most ``window_s`` for company. Rows whose :class:`PADConfig` agrees on
everything but the weight, token limit and diagnostics run in one ``PAD.generate`` call; each row keeps its own
preference, weight and token limit (the batch decodes to the largest limit and every row is cut at its own,
which for greedy decoding is exactly what the row alone gives). A seeded sampled request decodes alone, so its
seed gives the text it gives through the Python API and the CLI. Tokens are pushed to each request's queue as
they are decoded, without waiting for readers, so a slow client never holds back the batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from padkit.decoding.config import DEFAULT_WEIGHT, PADConfig
from padkit.decoding.continuous import ContinuousBatch, ContinuousRequest
from padkit.decoding.pad import PAD, Generation, eos_token_ids
from padkit.decoding.stops import streamable
from padkit.preferences import Preference
from padkit.preferences.render import Prompt


@dataclass
class Job:
    """One request: what to decode, and where its text deltas and final result go."""

    prompt: Prompt
    preference: Preference | None
    config: PADConfig
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    """Set when nobody waits for the answer any more (the client hung up, or its time ran out): the row stops at
    the next decode step, or never starts."""

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def max_tokens(self) -> int:
        return self.config.max_new_tokens

    @property
    def diagnostics(self) -> bool:
        return self.config.diagnostics

    def batch_key(self) -> Any:
        """Jobs with equal keys decode together: the settings a batch shares (a seeded sampled job: alone)."""
        if self.config.seed is not None and self.config.temperature > 0:
            return id(self)
        return self.config.replace(weight=DEFAULT_WEIGHT, max_new_tokens=1, diagnostics=False)

    def emit(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class _RowStreamer(BaseStreamer):
    """Sends each row's new text to its job as tokens arrive; rows stop at EOS or their own token limit."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, jobs: list[Job], eos: set[int], stops: list[str] | None = None
    ) -> None:
        self.tokenizer, self.jobs, self.eos, self.stops = tokenizer, jobs, eos, stops or []
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.done = [False] * len(jobs)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first passes the prompt ids
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1)[: len(self.jobs)].tolist()):
            self.add(i, token)

    def add(self, i: int, token: int) -> None:
        """Row ``i``'s next token."""
        if self.done[i]:
            return
        if token in self.eos:
            self.done[i] = True
            return
        self.tokens[i].append(token)
        text = self._safe_text(i)
        if not text.endswith("\ufffd") and len(text) > len(self.sent[i]):
            self.jobs[i].emit("delta", text[len(self.sent[i]) :])
            self.sent[i] = text
        if len(self.tokens[i]) >= self.jobs[i].max_tokens:
            self.done[i] = True

    def _safe_text(self, i: int) -> str:
        """The row's text so far, cut before a stop string, and holding back a tail that may start one."""
        text, stopped = streamable(self.tokenizer.decode(self.tokens[i], skip_special_tokens=True), self.stops)
        self.done[i] = self.done[i] or stopped
        return text

    def end(self) -> None:
        pass


def _cut(gen: Generation, limit: int, tokenizer) -> Generation:
    if len(gen.token_ids) <= limit:
        return gen
    ids = gen.token_ids[:limit]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    tokens = None if gen.tokens is None else gen.tokens[:limit]
    return Generation(text, ids, "length", gen.method, gen.preference, tokens)


class QueueFull(Exception):
    """More requests wait than the server takes (``max_queue``); the client should retry later."""


class Batcher:
    """A worker thread that drains a request queue into batched ``PAD.generate`` calls.

    At most ``max_queue`` requests wait (not yet decoding); :meth:`submit` refuses more with :class:`QueueFull`.
    ``on_batch(size)`` is called for each decode (the server's metrics; continuous batching: each step, with the
    requests in the running batch). ``continuous`` runs the continuous loop for what it serves, with at most
    ``max_batch`` requests in its batch."""

    def __init__(
        self,
        pad: PAD,
        window_s: float = 0.02,
        max_batch: int = 16,
        max_queue: int | None = None,
        on_batch: Any = None,
        continuous: bool = False,
    ) -> None:
        self.pad = pad
        self.continuous = continuous
        self.engine = ContinuousBatch(pad, max_rows=2 * max_batch) if continuous else None
        self._jobs: dict[int, Job] = {}
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.batches: list[int] = []  # sizes of the decodes run (continuous: requests admitted at once)
        run = self._run_continuous if continuous else self._run
        self.thread = threading.Thread(target=run, name="padkit-batcher", daemon=True)
        self.thread.start()

    @property
    def waiting(self) -> int:
        """Requests accepted and not yet decoding (continuous: also those waiting for room in the batch)."""
        return self.queue.qsize() + (len(self.engine.pending) if self.engine is not None else 0)

    def submit(self, job: Job) -> None:
        """Queue a job; :class:`QueueFull` when ``max_queue`` requests wait already (nothing is queued then)."""
        if self.max_queue is not None and self.waiting >= self.max_queue:
            raise QueueFull(f"{self.waiting} requests are waiting, the most this server queues")
        self.queue.put(job)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _collect(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = time.monotonic() + self.window_s
        while len(jobs) < self.max_batch and (left := deadline - time.monotonic()) > 0:
            try:
                job = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while (jobs := self._collect()) is not None:
            self._decode_static(jobs)

    def _decode_static(self, jobs: list[Job]) -> None:
        groups: dict[Any, list[Job]] = {}
        for job in jobs:
            if not job.cancelled:  # its client left while it waited
                groups.setdefault(job.batch_key(), []).append(job)
        for group in groups.values():
            self._decode(group)

    def _take(self, block: bool) -> list[Job | None]:
        """Every job waiting now; when ``block``, first wait for one."""
        jobs: list[Job | None] = [self.queue.get()] if block else []
        while True:
            try:
                jobs.append(self.queue.get_nowait())
            except queue.Empty:
                return jobs

    def _run_continuous(self) -> None:
        engine = self.engine
        while True:
            jobs = self._take(block=engine.idle)
            if None in jobs:
                return
            static = []
            for job in jobs:
                if job.cancelled:
                    continue
                if engine.serves(job.preference, job.config) is None:
                    engine.submit(self._request(job))
                else:
                    static.append(job)
            self._decode_static(static)
            if engine.idle:
                continue
            try:
                finished = engine.step()
            except Exception as exc:  # a failed step fails the requests in it, never the server
                self.engine = engine = ContinuousBatch(self.pad, max_rows=engine.max_rows)  # before anyone hears
                for request_id, job in list(self._jobs.items()):
                    job.emit("error", exc)
                    del self._jobs[request_id]
                continue
            if engine.admitted:
                self.batches.append(engine.admitted)
            if self.on_batch is not None and engine.running:
                self.on_batch(len(engine.running))
            for request in finished:
                self._jobs.pop(id(request)).emit("done", request.result)

    def _streamer(self, jobs: list[Job], config: PADConfig) -> _RowStreamer:
        """Streams ``jobs``' text in the vocabulary of ``config``'s method, held back before its stop strings."""
        model, tokenizer = self.pad.decoder(config.method)
        stops = self.pad.stops(config.method, config.stop)
        return _RowStreamer(tokenizer, jobs, set(eos_token_ids(model, tokenizer)), stops)

    def _request(self, job: Job) -> ContinuousRequest:
        streamer = self._streamer([job], job.config)
        streamer.prompt_seen = True
        request = ContinuousRequest(
            job.prompt,
            job.preference,
            job.config,
            on_token=lambda token: streamer.add(0, token),
            cancelled=lambda: job.cancelled,
        )
        self._jobs[id(request)] = job
        return request

    def _decode(self, jobs: list[Job]) -> None:
        self.batches.append(len(jobs))
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        config = jobs[0].config.replace(
            weight=tuple(j.config.weight for j in jobs),
            max_new_tokens=max(j.max_tokens for j in jobs),
            diagnostics=any(j.diagnostics for j in jobs),
        )
        streamer = None
        if config.method != "best-of-n":  # best-of-n picks its answer at the end: it is sent whole
            streamer = self._streamer(jobs, config)
        try:
            gens = self.pad.generate(
                [j.prompt for j in jobs],
                preferences=[j.preference for j in jobs],
                config=config,
                streamer=streamer,
                cancelled=lambda: [j.cancelled for j in jobs],
            )
        except Exception as exc:  # a failed decode fails its requests, never the server
            if len(jobs) == 1:
                jobs[0].emit("error", exc)
                return
            for i, job in enumerate(jobs):  # a bad row fails only itself: each row is decoded again alone,
                if streamer is not None and streamer.sent[i]:  # unless its client already has part of a text
                    job.emit("error", exc)
                else:
                    self._decode([job])
            return
        for job, gen in zip(jobs, gens, strict=True):
            job.emit("done", _cut(gen, job.max_tokens, self.pad.decoder(config.method)[1]))
