"""Serving benchmark: Poisson arrivals against padkit's HTTP server, static and continuous batching side by side.

Each run sends the same seeded schedule of streamed chat requests (arrival gaps drawn from an exponential
distribution at ``rate`` requests/s) and measures, per request, the time to its first text (TTFT) and the time
per output token after it (TPOT), then requests/s and generated tokens/s over the run. In-process, both
batchers serve the same PAD model one after the other on 127.0.0.1, so the two columns compare within one run.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlparse

import httpx2 as httpx

from padkit.decoding import PAD
from padkit.errors import PadkitError
from padkit.evaluation.speed import BENCH_PROMPTS


@dataclass
class LoadResult:
    """What one batcher did under the schedule."""

    name: str
    requests: int
    completed: int
    failed: int
    ttft_p50_s: float
    ttft_p95_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    requests_per_s: float
    tokens_per_s: float
    tokens: int
    wall_s: float
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None


@dataclass
class ServeBenchReport:
    rate: float
    requests: int
    max_tokens: int
    results: list[LoadResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def ratio(self, figure: str) -> float | None:
        """continuous / static for ``figure`` (both columns present), else None."""
        by = {r.name: r for r in self.results}
        if "static" not in by or "continuous" not in by or not getattr(by["static"], figure):
            return None
        return getattr(by["continuous"], figure) / getattr(by["static"], figure)


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """Send times (s from the start) of ``n`` requests arriving as a Poisson process of ``rate`` per second."""
    rng, at, times = random.Random(seed), 0.0, []
    for _ in range(n):
        times.append(at)
        at += rng.expovariate(rate)
    return times


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one(client: httpx.AsyncClient, url: str, body: dict, at: float, start: float) -> dict:
    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    sent, first, tokens = time.perf_counter(), None, 0
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"ok": False}
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
    except httpx.HTTPError:
        return {"ok": False}
    end = time.perf_counter()
    first = first if first is not None else end
    return {"ok": True, "ttft": first - sent, "tpot": (end - first) / max(tokens - 1, 1), "tokens": tokens}


def run_load(
    url: str,
    arrivals: Sequence[float],
    prompts: Sequence[str],
    preferences: Sequence[str | None],
    max_tokens: int,
    timeout_s: float = 600.0,
    name: str = "server",
) -> LoadResult:
    """Send one streamed greedy chat request per arrival time (prompts and preferences in turn) and measure."""
    from padkit.serving.app import LOCAL_HOSTS

    host = urlparse(url).hostname
    if host not in LOCAL_HOSTS:
        raise PadkitError(f"bench serve sends load to 127.0.0.1 only, not {host!r}")

    def body(i: int) -> dict:
        pref = preferences[i % len(preferences)]
        return {
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **({} if pref is None else {"preference": pref}),
        }

    async def main() -> tuple[list[dict], float]:
        limits = httpx.Limits(max_connections=len(arrivals) + 1)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
            start = time.perf_counter()
            records = await asyncio.gather(*(_one(client, url, body(i), at, start) for i, at in enumerate(arrivals)))
            return list(records), time.perf_counter() - start

    records, wall = asyncio.run(main())
    done = [r for r in records if r["ok"]]
    tokens = sum(r["tokens"] for r in done)
    return LoadResult(
        name=name,
        requests=len(records),
        completed=len(done),
        failed=len(records) - len(done),
        ttft_p50_s=_percentile([r["ttft"] for r in done], 0.5),
        ttft_p95_s=_percentile([r["ttft"] for r in done], 0.95),
        tpot_p50_s=_percentile([r["tpot"] for r in done], 0.5),
        tpot_p95_s=_percentile([r["tpot"] for r in done], 0.95),
        requests_per_s=len(done) / wall,
        tokens_per_s=tokens / wall,
        tokens=tokens,
        wall_s=wall,
    )


def _rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize() / 2**20


@contextmanager
def local_server(pad: PAD, continuous: bool, max_batch: int = 16) -> Iterator[str]:
    """A padkit server for ``pad`` on a free 127.0.0.1 port in this process (a thread); yields its URL."""
    import uvicorn

    from padkit.serving import ProfileStore, Server, create_app

    with TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = Server(pad, ProfileStore(Path(tmp) / "profiles.sqlite"), max_batch=max_batch, continuous=continuous)
        config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        while not uv.started:
            if not thread.is_alive():
                raise PadkitError("the benchmark's server did not start")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            uv.should_exit = True
            thread.join(timeout=30)


def run_serve_benchmark(
    pad: PAD | None = None,
    url: str | None = None,
    rate: float = 0.5,
    requests: int = 24,
    max_tokens: int = 128,
    preferences: Sequence[str | None] = ("concise",),
    batchers: Sequence[str] = ("static", "continuous"),
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> ServeBenchReport:
    """The same Poisson schedule against ``url``, or against in-process servers of ``pad`` with each batcher."""
    if rate <= 0 or requests < 1 or max_tokens < 1:
        raise PadkitError("rate must be positive, requests and max_tokens at least 1")
    arrivals = poisson_arrivals(rate, requests, seed)
    report = ServeBenchReport(rate=rate, requests=requests, max_tokens=max_tokens)
    if url is not None:
        log(f"{requests} requests at {rate}/s against {url}")
        report.results.append(run_load(url.rstrip("/"), arrivals, BENCH_PROMPTS, preferences, max_tokens, name=url))
        return report
    if pad is None:
        raise PadkitError("give a PAD model or a --url")
    for name in batchers:
        if name not in ("static", "continuous"):
            raise PadkitError(f"unknown batcher {name!r}; use static or continuous")
        log(f"{name} batcher: {requests} requests at {rate}/s")
        with local_server(pad, continuous=name == "continuous") as local:
            before = _rss_mb()
            result = run_load(local, arrivals, BENCH_PROMPTS, preferences, max_tokens, name=name)
            result.rss_before_mb, result.rss_after_mb = before, _rss_mb()
        report.results.append(result)
    return report
