"""PADConfig: one declaration of every decoding setting, validated once, with errors that name the setting."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from padkit import PAD, ConfigError, PADConfig
from padkit.decoding.config import FIELDS, MAX_TOP_K
from padkit.settings import setting


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (dict(top_k=0), "top_k"),
        (dict(top_k=MAX_TOP_K + 1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(weight=1e308), "weight"),
        (dict(weight=float("nan")), "weight"),
        (dict(weight=(1.0, float("inf"))), "weight"),
        (dict(reference="bogus"), "reference"),
        (dict(candidates="bogus"), "candidates"),
        (dict(method="magic"), "method"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=True), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(seed=-3), "seed"),
        (dict(best_of=0), "best_of"),
        (dict(reward_margin=-1.0), "reward_margin"),
        (dict(fluency_budget=-0.5), "fluency_budget"),
        (dict(stop=("",)), "stop"),
        (dict(ignore_eos="yes"), "ignore_eos"),
        (dict(method="base", diagnostics=True), "diagnostics"),
    ],
)
def test_each_bad_value_is_named(values, field):
    with pytest.raises(ConfigError) as err:
        PADConfig(**values)
    assert err.value.field == field and field in str(err.value)


def test_replace_validates_and_refuses_unknown_settings():
    config = PADConfig(weight=2.0, stop="\n\n")
    assert config.stop == ("\n\n",) and config.replace(top_k=3).top_k == 3 and config.top_k == 10
    with pytest.raises(ConfigError, match="top_k"):
        config.replace(top_k=0)
    with pytest.raises(ConfigError, match="unknown decoding setting 'topk'"):
        config.replace(topk=3)
    assert PADConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(PADConfig.from_dict(config.to_dict()))  # batches are grouped by config


def test_decisive_settings_are_those_the_method_reads():
    from padkit.decoding.config import METHOD_SETTINGS

    loud = PADConfig(method="base", amulet_alpha=0.5, top_k=3, min_p=0.1, reward_margin=2, best_of=2, judge_gamma=2)
    assert loud.decisive() == PADConfig(method="base")
    amulet = PADConfig(method="amulet", amulet_alpha=0.5, top_k=3).decisive()
    assert amulet.amulet_alpha == 0.5 and amulet.top_k == 10
    guided = PADConfig(top_k=3, min_p=0.1, amulet_alpha=0.5).decisive()
    assert (guided.top_k, guided.min_p, guided.amulet_alpha) == (3, 0.1, 2.0)
    assert set().union(*METHOD_SETTINGS.values()) <= set(PADConfig.__dataclass_fields__)
    assert PADConfig().reads("loop_guard") and not PADConfig(method="prompt").reads("loop_guard")
    assert PADConfig(method="args").reads("top_k") and PADConfig(method="base").reads("weight")


def test_papers_pad_turns_off_what_padkit_adds_by_default():
    from padkit import PAPER_PAD

    paper, default = PADConfig(**PAPER_PAD), PADConfig()
    assert (paper.prompted_base, paper.loop_guard, paper.ngram_guard) == (False, 0, 0)
    assert (default.prompted_base, default.loop_guard, default.ngram_guard) == (None, 4, 8)  # None: on unless rm="self"
    assert paper.replace(**{k: getattr(default, k) for k in PAPER_PAD}) == default  # they differ in these alone


def test_every_setting_has_help_and_a_default():
    for name in FIELDS:
        assert len(PADConfig.help(name)) > 20, name
        PADConfig.default(name)


def test_setting_carries_help_and_cli_spelling_and_copies_a_mutable_default():
    @dataclass
    class Example:
        caps: dict = setting({"a": 1}, "Caps per name.", flags=("--cap",))
        top_p: float = setting(1.0, "Nucleus mass.")

    first, second = Example(), Example()
    first.caps["b"] = 2
    assert second.caps == {"a": 1} and second.top_p == 1.0
    meta = {f.name: dict(f.metadata) for f in fields(Example)}
    assert meta == {"caps": {"help": "Caps per name.", "flags": ("--cap",)}, "top_p": {"help": "Nucleus mass."}}


def test_generate_takes_a_config_and_keyword_overrides(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    config = PADConfig(weight=1.5, max_new_tokens=6, top_k=4)
    by_config = pad.generate(["Tell me about cats."], "concise", config=config)
    by_keywords = pad.generate(["Tell me about cats."], "concise", weight=1.5, max_new_tokens=6, top_k=4)
    by_both = pad.generate(["Tell me about cats."], "concise", config=config.replace(top_k=9), top_k=4)
    assert by_config[0].token_ids == by_keywords[0].token_ids == by_both[0].token_ids
    with pytest.raises(ConfigError, match="unknown decoding setting"):
        pad.generate(["Tell me about cats."], "concise", temprature=0.5)


def test_the_decode_mode_follows_the_config_only(base_model, rm_model, lora_rm, tokenizer):
    two_models = PAD(base_model, tokenizer, rm_model, tokenizer)
    self_guided = PAD(base_model, tokenizer)
    shared = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    assert two_models.decode_mode(PADConfig()) == "pad"
    assert self_guided.decode_mode(PADConfig()) == "fused-pad"
    assert self_guided.decode_mode(PADConfig(fused=False)) == "pad"
    assert shared.decode_mode(PADConfig(temperature=0.9)) == "fused-pad"
    assert shared.decode_mode(PADConfig(reference="rm-init")) == "pad"
    assert two_models.decode_mode(PADConfig(method="prompt")) == "plain"
    assert two_models.decode_mode(PADConfig(method="best-of-n")) == "best-of-n"
    with pytest.raises(ConfigError, match="fused decoding needs"):
        two_models.decode_mode(PADConfig(fused=True))
