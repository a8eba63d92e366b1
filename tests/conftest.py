"""Tiny randomly initialised models and a tiny tokenizer, built in seconds, for the unit tests."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Generate a response that is concise and to the point, without being lengthy.",
    "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
    "Tell me about cats. Why is the sky blue? How do planes fly? Write a poem about the sea.",
    "[Guidelines] Your task is to generate response by considering the following principle.",
    "[Principles] [Instruction] Question: Answer: system user assistant",
] * 20


def fast_train_config(tiny_model_dir, **settings):
    """A tiny-model PersRM training config that learns in about ten steps (high learning rate, small LoRA)."""
    from padkit.training.dpo import PersRMTrainConfig

    fast = dict(
        batch_size=4,
        learning_rate=2e-2,
        lora_r=4,
        lora_alpha=8,
        max_length=160,
        max_prompt_length=120,
        heldout_fraction=0.0,
    )
    return PersRMTrainConfig(base=str(tiny_model_dir), **{**fast, **settings})


def make_tokenizer(
    vocab_size: int = 320,
    chat_template: str | None = CHAT_TEMPLATE,
    all_bytes: bool = True,
    specials: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
):
    """A byte-level BPE tokenizer; ``all_bytes=False`` keeps only the corpus's (ASCII) characters, so no token
    holds part of a UTF-8 character, and a tiny ``vocab_size`` leaves no merges: one token per character.
    ``<|im_end|>`` (EOS and padding) must be among ``specials``; the others are optional."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if all_bytes else [],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token="<|im_start|>" if "<|im_start|>" in specials else None,
    )
    fast.chat_template = chat_template
    fast.padding_side = "left"
    return fast


def make_model(tokenizer, seed: int = 0, dtype=torch.float64, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():  # a mid-ranked EOS, so outputs run for several tokens but EOS can still win
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def make_lora(model, seed: int = 1):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), lora).eval()


def check_fluency_budget(pad, prompts, preference: str, **settings) -> None:
    """PAD's fluency budget on ``pad`` (paper PAD at w=8, 12 tokens, plus ``settings``): summed over an answer, the
    chosen tokens cost the base (its first choice's log-prob minus theirs) at most the budget per token written
    plus ``FLUENCY_BUDGET_AHEAD`` tokens' worth, at every token; a budget of next to nothing decodes as the base;
    the budget binds, and the free answers spend more than the guarded ones."""
    from padkit import PAPER_PAD
    from padkit.decoding.config import FLUENCY_BUDGET_AHEAD

    def costs(gen) -> list[float]:
        return [max(a.base_logprob for a in t.alternatives) - t.base_logprob for t in gen.tokens]

    kwargs = dict(PAPER_PAD, weight=8.0, max_new_tokens=12, ignore_eos=True, diagnostics=True, **settings)
    base = [g.token_ids for g in pad.generate(prompts, method="base", max_new_tokens=12, ignore_eos=True)]
    nothing = pad.generate(prompts, preference, **{**kwargs, "fluency_budget": 1e-9})
    assert [g.token_ids for g in nothing] == base
    free = pad.generate(prompts, preference, **kwargs)
    budget = 0.1
    assert max(sum(costs(g)) for g in free) > budget * (12 + FLUENCY_BUDGET_AHEAD)  # the budget binds here
    guarded = pad.generate(prompts, preference, **{**kwargs, "fluency_budget": budget})
    for gen in guarded:
        spent = 0.0
        for written, cost in enumerate(costs(gen)):
            spent += cost
            assert spent <= budget * (written + 1 + FLUENCY_BUDGET_AHEAD) + 1e-4
    assert sum(sum(costs(g)) for g in guarded) < sum(sum(costs(g)) for g in free)
    assert [g.token_ids for g in guarded] != base


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def base_model(tokenizer):
    return make_model(tokenizer, seed=0)


@pytest.fixture(scope="session")
def rm_model(tokenizer):
    return make_model(tokenizer, seed=7)


@pytest.fixture(scope="session")
def lora_rm(base_model):
    return make_lora(base_model)


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """A tiny model saved like a real checkpoint, for loader and CLI tests."""
    path = tmp_path / "tiny"
    model = make_model(tokenizer, seed=0, dtype=torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "fixed")  # kernel choices independent of this machine's timings


@contextlib.contextmanager
def running_server(db_dir, pad=None, **server_options):
    """A real uvicorn server on 127.0.0.1 (free port) with ``pad`` or a tiny model: yields ``(Server, base URL)``."""
    import uvicorn

    from padkit import PAD
    from padkit.serving import ProfileStore, Server, create_app

    if pad is None:
        tokenizer = make_tokenizer()
        pad = PAD(make_model(tokenizer, seed=0), tokenizer, base_name="tiny")
    server = Server(pad, ProfileStore(db_dir / "profiles.sqlite"), **server_options)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
