"""The real HTTP server on 127.0.0.1 with a tiny model, driven by the official openai client."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from padkit.decoding.config import DEFAULT_WEIGHT, PADConfig
from padkit.serving import ProfileStore

PROMPTS = ["Tell me about cats.", "Why is the sky blue?", "How do planes fly?", "Write a poem about the sea."]
PREFS = ["concise", "humorous", "friendly=0.5,concise=0.5", None]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conftest import running_server

    with running_server(
        tmp_path_factory.mktemp("db"), default_weight=1.5, max_tokens_limit=64, window_s=0.05, max_batch=16
    ) as (server, url):
        yield server, url


@pytest.fixture(scope="module")
def served_static(tmp_path_factory):
    """The same server with the static batcher (time window, each batch run to its end)."""
    from conftest import running_server

    with running_server(
        tmp_path_factory.mktemp("db"), default_weight=1.5, max_tokens_limit=64, window_s=0.05, continuous=False
    ) as (server, url):
        yield server, url


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=f"{served[1]}/v1", api_key="unused", max_retries=0)


def _alone(server, prompt, preference, weight=1.5, max_tokens=8, method="pad"):
    return server.pad.generate([prompt], preference, weight=weight, max_new_tokens=max_tokens, method=method)[0]


def test_chat_matches_the_python_api(served, client):
    server, _ = served
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=8,
        temperature=0,
        extra_body={"preference": "concise", "alignment_weight": 2.0},
    )
    expected = _alone(server, PROMPTS[0], "concise", weight=2.0)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.completion_tokens == len(expected.token_ids) and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    structured = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=8,
        temperature=0,
        extra_body={"preference": [{"dimension": "concise", "weight": 1.0}], "alignment_weight": 2.0},
    )
    assert structured.choices[0].message.content == expected.text


def test_completions_and_models(served, client):
    server, url = served
    reply = client.completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=6, temperature=0, extra_body={"method": "base"}
    )
    assert reply.choices[0].text == _alone(server, PROMPTS[1], None, max_tokens=6, method="base").text
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["default_weight"] == server.default_weight


def test_streaming_gives_the_same_text_and_usage(served, client):
    server, _ = served
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPTS[2]}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"preference": "humorous"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = _alone(server, PROMPTS[2], "humorous", max_tokens=10)
    assert text == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # it really streamed


def test_profiles_select_the_preference(served, client):
    server, url = served
    put = httpx.put(
        f"{url}/v1/profiles/alice", json={"preference": "humorous=0.7,concise=0.3", "alignment_weight": 2.5}
    )
    assert put.status_code == 200
    assert httpx.get(f"{url}/v1/profiles/alice").json()["preference"] == "humorous=0.7,concise=0.3"
    msgs = [{"role": "user", "content": PROMPTS[3]}]
    by_profile = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0, user="alice")
    assert by_profile.choices[0].message.content == _alone(server, PROMPTS[3], "humorous=0.7,concise=0.3", 2.5).text
    override = client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, user="alice", extra_body={"preference": "friendly"}
    )
    assert override.choices[0].message.content == _alone(server, PROMPTS[3], "friendly", 2.5).text
    assert ProfileStore(server.store.path).get("alice").alignment_weight == 2.5  # really on disk
    assert httpx.delete(f"{url}/v1/profiles/alice").status_code == 200
    assert httpx.get(f"{url}/v1/profiles/alice").status_code == 404
    with pytest.raises(openai.NotFoundError, match="no profile for user 'alice'"):
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4, user="alice")


@pytest.mark.parametrize("batcher", ["served", "served_static"])
def test_32_concurrent_requests_batch_and_match_alone(request, batcher):
    server, url = request.getfixturevalue(batcher)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    jobs = [(PROMPTS[i % 4], PREFS[(i // 4) % 4], 4 + i % 5) for i in range(32)]

    def ask(job):
        prompt, pref, n = job
        extra = {} if pref is None else {"preference": pref}
        reply = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=n,
            temperature=0,
            extra_body=extra,
        )
        return reply.choices[0].message.content

    before = len(server.batcher.batches)
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(ask, jobs))
    assert len(got) == 32
    assert got == [_alone(server, p, pref, max_tokens=n).text for p, pref, n in jobs]
    sizes = server.batcher.batches[before:]
    assert sum(sizes) == 32 and max(sizes) > 1


def test_a_slow_stream_reader_does_not_hold_back_others(served, client):
    _, url = served
    body = {
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": 30,
        "temperature": 0,
        "stream": True,
        "preference": "concise",
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as slow:
        lines = slow.iter_lines()
        next(lines)  # read one event, then stall
        start = time.monotonic()
        other = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=4, temperature=0
        )
        assert other.choices[0].message.content is not None and time.monotonic() - start < 20
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    ("payload", "status", "match"),
    [
        ('{"messages": [', 400, "not valid JSON"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "preference": [{"dimension": "sarcastic-ish"}]},
            400,
            "unknown dimension",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "preference": "concise", "alignment_weight": NaN}',
            400,
            "alignment_weight must be a finite number",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "preference": "concise=inf"}, 400, "finite"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens must be between"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "max_tokens must be between"),
        ({"messages": [{"role": "user", "content": "cats " * 400}], "max_tokens": 8}, 400, "exceeds the context"),
        ({"messages": [{"role": "user", "content": "hi"}], "user": "nobody"}, 404, "no profile for user 'nobody'"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "must end with a non-empty user message"),
        ({"messages": "hi"}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "method": "magic"}, 400, "unknown method"),
    ],
)
def test_bad_input_gets_openai_style_errors(served, payload, status, match):
    _, url = served
    kwargs = (
        {"content": payload, "headers": {"content-type": "application/json"}}
        if isinstance(payload, str)
        else {"json": payload}
    )
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert match in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{url}/health").status_code == 200  # still up


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_k": 0}, "top_k"),
        ({"alignment_weight": 1e308}, "alignment_weight"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"method": "best-of-n", "diagnostics": True}, "diagnostics"),
        ({"seed": -1}, "seed"),
        ({"preference": "concise=1e300"}, "preference"),
    ],
)
def test_a_bad_setting_is_a_400_naming_its_request_field(served, fields, param):
    """The server checks settings with the same PADConfig.validate() as the API and the CLI."""
    _, url = served
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and (param in error["message"] or param == "preference")


def test_profile_api_rejects_bad_profiles(served):
    _, url = served
    bad = httpx.put(f"{url}/v1/profiles/bob", json={"preference": [{"dimension": "nope", "weight": 1}]})
    assert bad.status_code == 400 and "unknown dimension" in bad.json()["error"]["message"]
    assert httpx.put(f"{url}/v1/profiles/bob", json={"preference": ""}).status_code == 400
    assert httpx.get(f"{url}/v1/profiles/bob").status_code == 404


def test_llm_judge_talks_to_an_openai_compatible_endpoint(served, tmp_path):
    """padkit's own server stands in for GPT-4: the judge's requests arrive and its verdicts are parsed."""
    from padkit.evaluation.harness import EvalConfig, run_eval
    from padkit.evaluation.judges import LLMPairwiseJudge
    from padkit.prompts import PromptRow

    server, url = served
    judge = LLMPairwiseJudge(f"{url}/v1", "tiny")
    before = sum(server.batcher.batches)
    assert judge.compare("Why?", "Be concise.", "Because.", "Because.") in (0.0, 0.5, 1.0)
    config = EvalConfig(
        methods=("base", "prompt"), preferences=("concise",), decoding=PADConfig(max_new_tokens=4), llm_judge=judge
    )
    rows = [PromptRow("a", "Tell me about cats."), PromptRow("b", "How do planes fly?")]
    report = run_eval({"main": server.pad, "self": server.pad}, rows, tmp_path, config, progress=False)
    llm = [r for r in report.rows if r.judge == "llm-win"]
    assert len(llm) == 1 and llm[0].method == "prompt" and 0 <= llm[0].mean <= 1 and llm[0].n == 2
    wins = [a["judges"]["llm-win"] for a in report.answers if a["method"] == "prompt"]
    assert len(wins) == 2 and sum(wins) / 2 == llm[0].mean  # each answer's verdict is on its mark sheet
    assert sum(server.batcher.batches) == before + 3  # one direct call + one per prompt


def _chat(url: str, **body) -> dict:
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8, "temperature": 0, **body}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_diagnostics_extension_gives_each_tokens_reward(served):
    server, url = served
    reply = _chat(url, preference="concise", alignment_weight=2.0, diagnostics=True)
    expected = server.pad.generate([PROMPTS[0]], "concise", weight=2.0, max_new_tokens=8, diagnostics=True)[0]
    tokens = reply["tokens"]
    assert [t["token_id"] for t in tokens] == [t.token_id for t in expected.tokens]
    assert [t["eos"] for t in tokens] == [i >= len(expected.token_ids) for i in range(len(tokens))]
    for got, want in zip(tokens, expected.tokens, strict=True):
        assert got["reward"] == pytest.approx(want.reward) and got["base_logprob"] == pytest.approx(want.base_logprob)
        assert [a["token_id"] for a in got["alternatives"]] == [a.token_id for a in want.alternatives]
        assert got["token_id"] in [a["token_id"] for a in got["alternatives"]]
    assert "tokens" not in _chat(url, preference="concise")
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8, "temperature": 0}
    body |= {"preference": "concise", "alignment_weight": 2.0, "diagnostics": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    final = [c for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and [t["token_id"] for t in final[0]["tokens"]] == [t["token_id"] for t in tokens]
    bad = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False, "method": "prompt"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "diagnostics"


def test_free_text_items_mix_with_catalog_dimensions(served):
    server, url = served
    items = [{"dimension": "concise", "weight": 0.5}, {"text": "talks like a pirate", "weight": 1.0}]
    reply = _chat(url, preference=items, alignment_weight=2.0)
    pref = [{"dimension": "concise", "weight": 0.5}, {"dimension": "talks like a pirate", "weight": 1.0}]
    assert reply["choices"][0]["message"]["content"] == _alone(server, PROMPTS[0], pref, weight=2.0).text
    assert reply["preference"] == "concise=0.5,talks like a pirate=1"
    for bad in ([{"weight": 1.0}], [{"dimension": "concise", "text": "x"}]):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "preference": bad},
            timeout=30,
        )
        assert response.status_code == 400 and "exactly one of" in response.json()["error"]["message"]


def test_greedy_base_requests_join_pad_batches(served_static):
    server, url = served_static
    before = len(server.batcher.batches)
    with ThreadPoolExecutor(2) as pool:
        base, guided = pool.map(
            lambda body: _chat(url, **body), [{"method": "base"}, {"preference": "concise", "alignment_weight": 2.0}]
        )
    assert server.batcher.batches[before:] == [2]
    assert base["choices"][0]["message"]["content"] == _alone(server, PROMPTS[0], None, method="base").text
    assert guided["choices"][0]["message"]["content"] == _alone(server, PROMPTS[0], "concise", weight=2.0).text


def test_playground_page_and_dimensions_are_served(served):
    _, url = served
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "padkit playground" in page.text and "/static/playground.js" in page.text
    script = httpx.get(f"{url}/static/playground.js")
    assert script.status_code == 200 and "/v1/chat/completions" in script.text
    dims = {d["name"]: d for d in httpx.get(f"{url}/v1/dimensions").json()["data"]}
    assert dims["concise"]["opposite"] == "detailed" and dims["humorous"]["opposite"] is None


def test_stop_sequences_cut_plain_and_streamed_answers(served):
    server, url = served
    full = _alone(server, PROMPTS[1], "concise", weight=2.0, max_tokens=24)
    stop = full.text[4:7]
    want = server.pad.generate([PROMPTS[1]], "concise", weight=2.0, max_new_tokens=24, stop=[stop])[0]
    assert want.text == full.text[: full.text.find(stop)]
    body = {"messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 24, "temperature": 0}
    body |= {"preference": "concise", "alignment_weight": 2.0, "stop": stop}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    assert reply["choices"][0]["message"]["content"] == want.text
    assert reply["choices"][0]["finish_reason"] == "stop"
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=30) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert streamed == want.text
    too_many = httpx.post(f"{url}/v1/chat/completions", json={**body, "stop": ["a", "b", "c", "d", "e"]}, timeout=30)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "stop"


def test_counting_prompt_tokens_is_safe_while_a_batch_encodes(served):
    """Regression: request threads counted tokens with the decoder's tokenizer, whose padding state the batcher
    thread sets; a padded batch then came back unpadded ("Unable to create tensor", a 500) under load."""
    server, _ = served
    pad, stop, errors = server.pad, time.monotonic() + 2.0, []

    def count() -> None:
        while time.monotonic() < stop:
            try:
                server.prompt_tokens("Why is the sky blue?")
            except Exception as err:  # noqa: BLE001 - any error is the failure being tested for
                errors.append(err)

    threads = [threading.Thread(target=count) for _ in range(3)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        try:
            pad._encode(pad.tokenizer, ["Tell me about cats. " * 20, "Why is the sky blue?"], pad.base_model, 8)
        except Exception as err:  # noqa: BLE001
            errors.append(err)
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize(
    ("fields", "param", "match"),
    [
        ({"stream": "yes"}, "stream", "valid boolean"),
        ({"max_completion_tokens": 0}, "max_tokens", "max_tokens must be between"),
        ({"logprobs": True}, "logprobs", "does not implement logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "does not implement tools"),
        ({"response_format": {"type": "json_object"}}, "response_format", "does not implement"),
        ({"user": "u" * 300}, "user", "user must be 1 to 256 characters"),
        ({"preference": "word " * 3000}, "preference", "exceeds the context"),
    ],
)
def test_each_request_is_checked_completely_before_it_joins_a_batch(served, fields, param, match):
    _, url = served
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and match in error["message"]


def test_a_falsy_unsupported_field_asks_for_nothing_and_passes(served, client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0, logprobs=False
    )
    assert reply.choices[0].message.content is not None


def test_an_oversized_body_gets_413(served):
    _, url = served
    body = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    response = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_a_free_text_profile_is_saved_and_used(served):
    server, url = served
    item = [{"text": "talks like a pirate", "weight": 1}]
    assert httpx.put(f"{url}/v1/profiles/pirate-fan", json={"preference": item}).status_code == 200
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 6, "temperature": 0}
    got = httpx.post(f"{url}/v1/chat/completions", json={**body, "user": "pirate-fan"}, timeout=60).json()
    want = _alone(server, PROMPTS[0], [("talks like a pirate", 1.0)], max_tokens=6)
    assert got["choices"][0]["message"]["content"] == want.text


def test_a_row_that_fails_while_decoding_fails_alone(tmp_path):
    """Rows batched together: one whose decode raises gets the error, the others their lone answers."""
    from conftest import running_server

    with running_server(tmp_path, window_s=1.0, max_batch=8, continuous=False) as (server, url):
        real = server.pad.generate

        def generate(prompts, preference=None, **kwargs):
            if any(str(p).startswith("explode") for p in kwargs.get("preferences") or ()):
                raise RuntimeError("a row that cannot be decoded")
            return real(prompts, preference, **kwargs)

        server.pad.generate = generate
        requests = [(PROMPTS[i], pref) for i, pref in enumerate(["concise", "explode", "humorous"])]
        with ThreadPoolExecutor(3) as pool:
            replies = list(
                pool.map(
                    lambda pp: httpx.post(
                        f"{url}/v1/chat/completions",
                        json={
                            "messages": [{"role": "user", "content": pp[0]}],
                            "max_tokens": 6,
                            "temperature": 0,
                            "preference": pp[1],
                        },
                        timeout=60,
                    ),
                    requests,
                )
            )
        assert server.batcher.batches[0] == 3  # they did share a batch
        assert replies[1].status_code == 500
        for (prompt, pref), reply in zip(requests, replies, strict=True):
            if pref != "explode":
                assert reply.status_code == 200
                want = real([prompt], pref, weight=DEFAULT_WEIGHT, max_new_tokens=6)[0].text
                assert reply.json()["choices"][0]["message"]["content"] == want


def test_keys_guard_every_v1_route_and_a_user_key_reaches_only_its_own_profile(tmp_path):
    from conftest import running_server

    store = ProfileStore(tmp_path / "profiles.sqlite")
    alice_key, alice = store.add_key("alice")
    bob_key, _ = store.add_key("bob")
    with running_server(tmp_path, api_key="admin-secret") as (server, url):

        def call(method, path, key=None, **kwargs):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.request(method, f"{url}{path}", headers=headers, timeout=60, **kwargs)

        assert call("GET", "/health").status_code == 200  # open: a load balancer's probe
        assert call("GET", "/v1/models").status_code == 401
        assert call("GET", "/v1/models", "wrong").json()["error"]["code"] == "invalid_api_key"
        assert call("GET", "/v1/models", "admin-secret").status_code == 200
        assert call("PUT", "/v1/profiles/alice", alice_key, json={"preference": "concise"}).status_code == 200
        assert call("PUT", "/v1/profiles/bob", "admin-secret", json={"preference": "humorous"}).status_code == 200
        forbidden = call("GET", "/v1/profiles/bob", alice_key)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        assert call("DELETE", "/v1/profiles/bob", alice_key).status_code == 403
        assert call("GET", "/v1/profiles/bob", bob_key).json()["preference"] == "humorous"
        # alice's requests use alice's profile, whatever user they name
        body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 6, "temperature": 0}
        as_bob = call("POST", "/v1/chat/completions", alice_key, json={**body, "user": "bob"}).json()
        assert as_bob["preference"] == "concise=1"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice_key, max_retries=0)
        reply = client.chat.completions.create(model="tiny", messages=body["messages"], max_tokens=6, temperature=0)
        alone = _alone(server, PROMPTS[0], "concise", weight=DEFAULT_WEIGHT, max_tokens=6)
        assert reply.choices[0].message.content == alone.text
        assert store.revoke_key(alice.key_id)
        assert call("GET", "/v1/models", alice_key).status_code == 401


def test_keys_are_stored_hashed_and_managed_from_the_cli(tmp_path):
    import sqlite3

    from typer.testing import CliRunner

    from padkit.cli.main import app

    db = tmp_path / "p.sqlite"
    runner = CliRunner()
    added = runner.invoke(app, ["keys", "add", "alice", "--db", str(db)])
    key = added.stdout.strip()
    assert added.exit_code == 0 and key.startswith("pk-") and len(key) > 40
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT key_hash, key_id, user FROM api_keys").fetchall()
    assert len(stored) == 1 and key not in str(stored) and stored[0][2] == "alice"
    key_id = stored[0][1]
    listed = runner.invoke(app, ["keys", "list", "--db", str(db)], env={"COLUMNS": "200"})
    assert key_id in listed.stdout and "alice" in listed.stdout
    assert ProfileStore(db).key_user(key) == "alice"
    assert runner.invoke(app, ["keys", "revoke", key_id, "--db", str(db)]).exit_code == 0
    assert ProfileStore(db).key_user(key) is None
    again = runner.invoke(app, ["keys", "revoke", key_id, "--db", str(db)])
    assert again.exit_code == 2 and "no active key" in again.output


def test_serve_refuses_an_open_server_on_a_public_host(tmp_path):
    from typer.testing import CliRunner

    from padkit.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "p.sqlite")])
    assert result.exit_code == 2 and "refusing to serve 0.0.0.0 with no API key" in " ".join(result.output.split())


def _first_text_then_hang_up(url: str, body: dict) -> None:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():  # the first text, then the client is gone
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                return


def _streamed_text(url: str, body: dict) -> str:
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text


def _recording(server):
    """Wrap the server's PAD.generate to keep what each decode returned (the batcher's thread calls it)."""
    real, seen = server.pad.generate, []

    def generate(*args, **kwargs):
        gens = real(*args, **kwargs)
        seen.append((kwargs.get("preferences"), gens))
        return gens

    server.pad.generate = generate
    return real, seen


def test_a_client_that_hangs_up_stops_its_row_and_the_others_finish_untouched(tmp_path):
    from conftest import running_server

    with running_server(tmp_path, window_s=1.0, max_tokens_limit=64, continuous=False) as (server, url):
        real, seen = _recording(server)
        lone = {p: real([p], "concise", weight=DEFAULT_WEIGHT, max_new_tokens=48)[0] for p in PROMPTS}
        long_prompt = next(p for p, g in lone.items() if g.finish_reason == "length")
        other = next(p for p in PROMPTS if p != long_prompt)
        # a decode step as slow as a real model's, so the hang-up lands mid-decode
        slow = server.pad.base_model.register_forward_pre_hook(lambda module, args: time.sleep(0.05))
        body = {"max_tokens": 48, "temperature": 0, "preference": "concise", "stream": True}

        def hang_up():
            _first_text_then_hang_up(url, {"messages": [{"role": "user", "content": long_prompt}], **body})

        def keep_streaming():
            return _streamed_text(url, {"messages": [{"role": "user", "content": other}], **body})

        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(keep_streaming)
            pool.submit(hang_up).result()
            assert kept.result() == lone[other].text
        slow.remove()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        [(prefs, gens)] = seen  # one shared decode
        assert sorted(g.finish_reason for g in gens) == ["cancelled", "length"]
        assert all(len(g.token_ids) < 48 for g in gens if g.finish_reason == "cancelled")
        metrics = httpx.get(f"{url}/metrics").text
        assert "padkit_cancelled_requests_total 1.0" in metrics


def test_past_max_queue_requests_get_429_with_retry_after_and_accepted_ones_finish(tmp_path):
    from conftest import running_server

    with running_server(tmp_path, window_s=0.0, max_queue=1, continuous=False) as (server, url):
        real, gate = server.pad.generate, threading.Event()

        def blocked(*args, **kwargs):
            gate.wait(30)
            return real(*args, **kwargs)

        server.pad.generate = blocked
        body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 4, "temperature": 0}
        post = lambda: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)  # noqa: E731
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post)
            _wait_for(lambda: server.batcher.batches)  # decoding (held at the gate)
            second = pool.submit(post)
            _wait_for(lambda: server.batcher.waiting == 1)
            refused = post()
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "queue_full"
            gate.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert first.result().json()["choices"][0]["message"]["content"] == real([PROMPTS[0]], max_new_tokens=4)[0].text


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_metrics_and_one_log_line_per_request_without_the_prompt(served, client, caplog):
    _, url = served
    with caplog.at_level("INFO", logger="padkit.requests"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "secret words"}], max_tokens=3, user=None
        )
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "padkit.requests"]
    assert len(lines) == 1 and lines[0]["status"] == 200 and lines[0]["method"] == "pad"
    assert set(lines[0]) >= {"id", "user", "method", "tokens", "latency_s", "status"}
    assert "secret words" not in json.dumps(lines)
    text = httpx.get(f"{url}/metrics").text
    for name in (
        'padkit_requests_total{route="/v1/chat/completions",status="200"}',
        "padkit_queue_depth",
        "padkit_batch_size_bucket",
        "padkit_time_to_first_token_seconds_bucket",
        "padkit_request_latency_seconds_count",
        "padkit_generated_tokens_total",
    ):
        assert name in text, name


def test_sigterm_refuses_new_requests_finishes_accepted_ones_and_exits_0(tmp_path, tiny_model_dir):
    """A real `padkit serve` process: a request waiting in the batch window when SIGTERM comes still gets its
    answer; a request after it gets 503; the process then exits 0 with its database intact."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "p.sqlite"
    ProfileStore(db).put("alice", "concise")
    command = [sys.executable, "-m", "padkit.cli.main", "serve", "--base", str(tiny_model_dir), "--rm", "self"]
    command += ["--port", str(port), "--db", str(db), "--static", "--batch-window-ms", "1500", "--grace-period", "20"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _up(url), 120)
        body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 4, "temperature": 0}
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=60)
            time.sleep(0.5)  # it waits in the 1.5 s batch window now
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            refused = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            assert accepted.result().status_code == 200
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ProfileStore(db).get("alice").preference == "concise"
    assert not (tmp_path / "p.sqlite-wal").exists() or (tmp_path / "p.sqlite-wal").stat().st_size == 0


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_concurrent_profile_writers_never_lose_an_acknowledged_write(served):
    _, url = served
    prefs = [f"concise={round(0.1 + i / 100, 2)}" for i in range(24)]

    def put(i: int) -> httpx.Response:
        user = "shared" if i % 2 else f"own-{i}"
        return httpx.put(f"{url}/v1/profiles/{user}", json={"preference": prefs[i]}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(put, range(len(prefs))))
    assert all(r.status_code == 200 for r in replies)
    for i in range(0, len(prefs), 2):  # each user written once: each write is there
        assert httpx.get(f"{url}/v1/profiles/own-{i}").json()["preference"] == prefs[i]
    shared = [r.json() for r in replies if r.json()["user"] == "shared"]
    last = max(shared, key=lambda p: p["updated_at"])
    assert httpx.get(f"{url}/v1/profiles/shared").json()["preference"] == last["preference"]


def test_a_corrupt_or_unwritable_database_is_a_clear_start_up_error(tmp_path):
    from padkit.errors import PadkitError

    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PadkitError, match="cannot open the profile database"):
        ProfileStore(corrupt)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            with pytest.raises(PadkitError, match="cannot open the profile database"):
                ProfileStore(locked / "p.sqlite")
    finally:
        locked.chmod(0o700)


def test_a_bounded_load_of_64_clients_half_hanging_up_some_with_wrong_keys(tmp_path):
    """Every accepted request that is not cancelled gets its lone answer, every refused one the right status,
    and the server ends with nothing queued, nothing in flight and memory near where it started."""
    from conftest import running_server

    def rss_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    store = ProfileStore(tmp_path / "profiles.sqlite")
    user_key, _ = store.add_key("carol")
    with running_server(tmp_path, api_key="admin", window_s=0.05, max_tokens_limit=64) as (server, url):
        real = server.pad.generate
        lone = {p: real([p], "concise", weight=DEFAULT_WEIGHT, max_new_tokens=24)[0].text for p in PROMPTS}
        before = rss_mb()

        def client(i: int) -> tuple[str, object]:
            prompt = PROMPTS[i % len(PROMPTS)]
            key = "wrong" if i % 8 == 7 else (user_key if i % 3 else "admin")
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "temperature": 0}
            body |= {"preference": "concise", "stream": True}
            headers = {"Authorization": f"Bearer {key}"}
            text = ""
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
                if r.status_code != 200:
                    return "refused", r.status_code
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                    if i % 2 and text:
                        return "hung up", None
            return "answered", (prompt, text)

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(client, range(64)))
        kinds = [k for k, _ in outcomes]
        assert kinds.count("refused") == 8 and all(v == 401 for k, v in outcomes if k == "refused")
        answered = [v for k, v in outcomes if k == "answered"]
        assert len(answered) >= 24 and all(text == lone[prompt] for prompt, text in answered)
        _wait_for(lambda: server.in_flight == 0 and server.batcher.waiting == 0)
        assert rss_mb() - before < 150


def test_continuous_batching_cancels_a_hung_up_stream_and_survives_a_failed_step(tmp_path):
    """A request that joins mid-batch streams at once; a client that hangs up ends its row at the next step while
    the other stream finishes as alone; a step that raises fails its requests (500) and the next one is served."""
    from conftest import running_server

    with running_server(tmp_path, max_tokens_limit=64) as (server, url):
        engine = server.batcher.engine
        real_step, finished = engine.step, []

        def step():
            done = real_step()
            finished.extend(done)
            return done

        engine.step = step
        slow = server.pad.base_model.register_forward_pre_hook(lambda module, args: time.sleep(0.05))
        body = {"max_tokens": 48, "temperature": 0, "preference": "concise", "stream": True}
        lone = {p: server.pad.generate([p], "concise", weight=DEFAULT_WEIGHT, max_new_tokens=48)[0] for p in PROMPTS}
        long_prompt = next(p for p, g in lone.items() if g.finish_reason == "length")
        other = next(p for p in PROMPTS if p != long_prompt)

        def hang_up():
            _first_text_then_hang_up(url, {"messages": [{"role": "user", "content": long_prompt}], **body})

        def keep_streaming():
            time.sleep(0.3)  # joins the running batch
            return _streamed_text(url, {"messages": [{"role": "user", "content": other}], **body})

        with ThreadPoolExecutor(2) as pool:
            gone, kept = pool.submit(hang_up), pool.submit(keep_streaming)
            gone.result()
            assert kept.result() == lone[other].text
        slow.remove()
        _wait_for(lambda: server.batcher.engine.idle)
        reasons = sorted(r.result.finish_reason for r in finished)
        assert reasons == sorted(["cancelled", lone[other].finish_reason])
        assert len(next(r for r in finished if r.result.finish_reason == "cancelled").token_ids) < 48

        def broken():
            raise RuntimeError("a step that cannot be decoded")

        engine._forward_step = broken
        msg = {"messages": [{"role": "user", "content": PROMPTS[2]}], "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=msg, timeout=60).status_code == 500
        assert server.batcher.engine is not engine  # a fresh loop
        ok = httpx.post(f"{url}/v1/chat/completions", json=msg, timeout=60)
        assert ok.status_code == 200
