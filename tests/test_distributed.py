"""Generation and evaluation on a local Ray cluster (2 CPUs, 2 workers) with a tiny model on disk."""

from __future__ import annotations

import builtins
import json
import os
import signal

import pytest
import torch
from typer.testing import CliRunner

from padkit import PAD, PADConfig
from padkit.cli.main import app
from padkit.distributed import Batch, ModelSpec, RayPool, run_local
from padkit.errors import PadkitError
from padkit.evaluation.harness import EvalConfig, run_generations
from padkit.prompts import PromptRow

ray = pytest.importorskip("ray")

PROMPTS = [
    "Tell me about cats.",
    "Why is the sky blue?",
    "How do planes fly?",
    "Write a poem about the sea.",
    "Tell me about the sea.",
    "Why do cats fly?",
    "How is the sky?",
    "Write about planes.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import make_model, make_tokenizer

    path = tmp_path_factory.mktemp("model") / "tiny"
    tokenizer = make_tokenizer()
    make_model(tokenizer, seed=0, dtype=torch.float32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def pool(cluster, model_dir):
    with RayPool({"main": ModelSpec(str(model_dir), "self")}, num_workers=2) as pool:
        yield pool


def _input_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": f"p{i}", "prompt": p, **({"preference": "humorous"} if i % 3 == 0 else {})}
        for i, p in enumerate(PROMPTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a row was written twice"
    return {r["id"]: r for r in records}


def test_ray_generate_equals_single_process_and_resumes(cluster, model_dir, tmp_path):
    prompts = _input_file(tmp_path)
    common = ["generate", "--input", str(prompts), "--base", str(model_dir), "--rm", "self", "-p", "concise"]
    common += ["-n", "8", "--batch-size", "2", "-w", "2"]
    local, dist = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    result = CliRunner().invoke(app, [*common, "--output", str(local)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*common, "--output", str(dist), "--ray", "--num-workers", "2"])
    assert result.exit_code == 0, result.output
    want, got = _read(local), _read(dist)
    assert set(got) == {f"p{i}" for i in range(len(PROMPTS))}
    assert {k: v["text"] for k, v in got.items()} == {k: v["text"] for k, v in want.items()}
    assert got["p0"]["preference"] == "humorous=1" and got["p1"]["preference"] == "concise=1"

    kept = dist.read_text().splitlines()[:3]
    dist.write_text("\n".join(kept) + "\n")
    result = CliRunner().invoke(app, [*common, "--output", str(dist), "--ray"])
    assert result.exit_code == 0, result.output
    assert "resuming: 3 of 8" in result.output
    assert {k: v["text"] for k, v in _read(dist).items()} == {k: v["text"] for k, v in want.items()}


def test_a_killed_worker_loses_no_row_and_writes_none_twice(pool, model_dir):
    pad = PAD.from_pretrained(str(model_dir), rm="self")
    starts = list(range(0, len(PROMPTS), 2)) * 3
    config = PADConfig(weight=2.0, max_new_tokens=24)
    batches = [Batch(PROMPTS[i : i + 2], ["concise", "humorous"], config, tag=n) for n, i in enumerate(starts)]
    want = {}
    run_local({"main": pad}, batches, lambda b, gens, s: want.setdefault(b.tag, [g.text for g in gens]))

    before = pool.pids()
    got: dict[int, list[str]] = {}
    seen: list[int] = []

    def on_result(batch, gens, seconds):
        seen.append(batch.tag)
        got[batch.tag] = [g.text for g in gens]
        if len(seen) == 1:  # one worker is mid-batch now, the other just finished: kill both processes
            for pid in before:
                os.kill(pid, signal.SIGKILL)

    pool.map(batches, on_result)
    assert sorted(seen) == list(range(len(batches)))  # every batch once: none lost, none twice
    assert got == want
    after = pool.pids()
    assert set(after).isdisjoint(before)  # both actors were restarted


def test_eval_generations_on_ray_equal_local(pool, model_dir, tmp_path):
    main = PAD.from_pretrained(str(model_dir), rm="self")
    rows = [PromptRow(str(i), p) for i, p in enumerate(PROMPTS[:4])]
    config = EvalConfig(
        methods=("base", "pad"), preferences=("concise", "humorous"), decoding=PADConfig(max_new_tokens=6), batch_size=2
    )
    local = run_generations({"main": main, "self": main}, rows, tmp_path / "local.jsonl", config, progress=False)
    dist = run_generations({}, rows, tmp_path / "ray.jsonl", config, progress=False, run=pool.map)
    assert len(dist) == len(local) == 4 + 8
    assert {r["id"]: r["text"] for r in dist} == {r["id"]: r["text"] for r in local}


def test_ray_is_an_optional_extra_with_a_clear_error(monkeypatch, model_dir, tmp_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(PadkitError, match=r"pip install 'padkit\[ray\]'"):
        RayPool({"main": ModelSpec(str(model_dir), "self")})
    result = CliRunner().invoke(app, ["generate", "hello", "--ray"])
    assert result.exit_code != 0 and "--ray goes with --input" in result.output
    prompts = _input_file(tmp_path)
    result = CliRunner().invoke(app, ["generate", "--input", str(prompts), "--base", str(model_dir), "--ray"])
    assert result.exit_code == 2 and "pip install 'padkit[ray]'" in result.output  # brackets survive rich markup
    with pytest.raises(PadkitError, match="model path not found"):
        RayPool({"main": ModelSpec(str(tmp_path / "missing"), "self")})


def test_too_many_workers_for_the_cluster_is_a_clear_error(cluster, model_dir):
    with pytest.raises(PadkitError, match="3 workers x 1 CPU need 3 CPUs"):
        RayPool({"main": ModelSpec(str(model_dir), "self")}, num_workers=3)._check_resources(3, {"CPU": 1}, 0)


def test_workers_decode_with_the_drivers_padkit_settings(pool):
    """The kernel policy reaches every worker (the tests set PADKIT_GEMM_PACKING=fixed after Ray started): a worker
    that measured its own GEMM kernel could sample another text from the same seed."""
    import os

    seen = ray.get([w.__ray_call__.remote(lambda _: os.environ.get("PADKIT_GEMM_PACKING")) for w in pool.workers])
    assert seen == ["fixed"] * len(pool.workers)


@pytest.mark.parametrize("rm", ["self", "lora"])
def test_a_seed_gives_the_same_text_through_every_entry_point(pool, model_dir, tmp_path, capsys, rm):
    """One seeded, sampled request through the Python API, the CLI piped and on a terminal (a streamer
    attached), the server (streaming and not) and a Ray worker: one text. The decode path depends on the
    configuration only, never on a streamer or a terminal."""
    import httpx2 as httpx
    from conftest import make_lora, running_server

    from padkit.cli.main import _stream_one
    from padkit.models.row_lora import set_adapters

    prompt, pref = "Tell me about cats.", "concise"
    config = PADConfig(temperature=0.9, seed=1, max_new_tokens=16, weight=2.0)
    pad = PAD.from_pretrained(str(model_dir), rm="self")
    if rm == "lora":  # a LoRA PersRM on one copy of the base: fused as well
        shared = make_lora(pad.base_model)
        set_adapters(shared, False)
        pad = PAD(shared, pad.tokenizer, shared, pad.tokenizer)
    want = pad.generate([prompt], pref, config=config)[0].text
    assert pad.decode_mode(config) == "fused-pad"
    assert want != pad.generate([prompt], pref, config=config.replace(seed=2))[0].text  # the seed matters

    _stream_one(pad, prompt, pref, config)  # what a terminal shows
    assert capsys.readouterr().out == want + "\n"
    if rm == "self":
        args = ["generate", prompt, "-p", pref, "--base", str(model_dir), "--rm", "self", "--temperature", "0.9"]
        piped = CliRunner().invoke(app, [*args, "--seed", "1", "-n", "16", "-w", "2"])
        assert piped.exit_code == 0 and piped.stdout == want + "\n"
        got = []
        pool.map([Batch([prompt], [pref], config)], lambda b, gens, s: got.append(gens[0].text))
        assert got == [want]

    with running_server(tmp_path, pad) as (server, url):
        body = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 16,
            "temperature": 0.9,
            "seed": 1,
            "preference": pref,
            "alignment_weight": 2.0,
        }
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        assert plain["choices"][0]["message"]["content"] == want
        streamed = ""
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    streamed += choice["delta"].get("content") or ""
        assert streamed == want
