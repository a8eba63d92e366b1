"""The speed benchmark's decoders agree with each other; its figures are ratios of real timings."""

from __future__ import annotations

import pytest
import torch

from padkit import PAD, PAPER_PAD
from padkit.errors import PadkitError
from padkit.evaluation.speed import forced_choices, official_pad_loop, run_speed_benchmark


@pytest.mark.parametrize("rm", ["self", "one-copy lora"])
def test_official_loop_equals_padkit_pad(base_model, tokenizer, rm):
    from conftest import make_lora

    from padkit.models.row_lora import set_adapters

    pad = PAD(base_model, tokenizer)
    if rm != "self":
        shared = make_lora(base_model)
        set_adapters(shared, False)
        pad = PAD(shared, tokenizer, shared, tokenizer)
    prompt = "Tell me about cats."
    official = official_pad_loop(pad, prompt, "humorous", weight=2.0, top_k=5, new_tokens=10)
    ours = pad.generate([prompt], "humorous", weight=2.0, top_k=5, candidates="topk", max_new_tokens=10, **PAPER_PAD)[0]
    assert ours.token_ids == official  # the paper's algorithm; padkit's defaults differ (prompted base, loop guard)
    assert tokenizer.eos_token_id not in official


def test_machine_info_names_what_decides_the_kernels(monkeypatch):
    from padkit.evaluation import speed
    from padkit.models.packed_gemm import PackingTiming

    info = speed.machine_info()
    assert info["logical_cores"] >= 1 and info["torch_threads"] == torch.get_num_threads()
    assert info["torch"] == torch.__version__ and set(info["cpu_flags"]) <= set(speed.SPEED_FLAGS)
    assert info["kernels"]["packed_gemm_from_rows"] == speed.PACK_MIN_ROWS  # conftest: the fixed policy
    line = speed.machine_line(info)
    assert info["cpu"] in line and f"torch {torch.__version__}" in line
    assert line.endswith(f"GEMM packed from {speed.PACK_MIN_ROWS} rows (fixed)")
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "auto")
    monkeypatch.setattr(speed.TUNER, "this_machine", lambda: {"abc": {2: PackingTiming(2, 10.0, 8.0)}})
    info = speed.machine_info()
    assert info["kernels"]["packing_measured"]["abc"][2]["packed"] is True
    assert speed.machine_line(info).endswith("GEMM packing measured: packed at rows 2 of 2")
    monkeypatch.setattr(speed, "mkl_packing_available", lambda: False)
    assert speed.machine_line(speed.machine_info()).endswith("GEMM packing off")


def test_benchmark_reports_consistent_ratios(base_model, tokenizer):
    report = run_speed_benchmark(PAD(base_model, tokenizer), new_tokens=4, batch_size=2, check_bf16=True, repeats=2)
    assert report.repeats == 2
    assert report.as_dict()["machine"]["cpu"] and report.machine["torch"] == torch.__version__
    assert report.plain_tps > 0 and report.pad_tps > 0 and report.official_tps > 0
    assert abs(report.pad_vs_plain - report.pad_tps / report.plain_tps) < 1e-9
    assert abs(report.pad_batch8_vs_batch1 - report.pad_batch8_tps / report.pad_tps) < 1e-9
    assert 0.0 <= report.bf16_prefix_agreement <= 1.0
    assert 0.0 <= report.bf16_token_agreement <= 1.0


def test_rounds_interleave_every_decoder_and_the_text_path_is_reported(base_model, tokenizer):
    lines: list[str] = []
    report = run_speed_benchmark(
        PAD(base_model, tokenizer), new_tokens=3, batch_size=2, text_path=True, repeats=2, log=lines.append
    )
    names = [line.split(" (round")[0] for line in lines]
    assert len(set(names)) == 6 and names[:6] == names[6:]  # each round times all six decoders, in the same order
    assert all("round 1/2" in line for line in lines[:6]) and all("round 2/2" in line for line in lines[6:])
    assert report.text_path_tps > 0 and report.official_tps > 0
    assert abs(report.text_path_vs_token_path - report.text_path_tps / report.pad_tps) < 1e-9


def test_forced_choices_are_pads_own_greedy_choices(base_model, rm_model, tokenizer):
    """Teacher forcing PAD along its own greedy output agrees at every step; forcing another first token still
    reports PAD's choice for that step."""
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    prompts = ["Tell me about cats.", "Why is the sky blue?"]
    gens = pad.generate(prompts, "humorous", weight=2.0, top_k=5, max_new_tokens=8, ignore_eos=True, **PAPER_PAD)
    tokens = torch.tensor([g.token_ids for g in gens])
    assert torch.equal(forced_choices(pad, prompts, "humorous", tokens, 2.0, 5), tokens)
    other = tokens.clone()
    other[:, 0] = (tokens[:, 0] + 1) % len(tokenizer)
    chosen = forced_choices(pad, prompts, "humorous", other, 2.0, 5)
    assert torch.equal(chosen[:, 0], tokens[:, 0])
    assert not torch.equal(chosen, tokens)  # after another first token PAD continues differently


def test_other_methods_are_timed_in_the_same_rounds(base_model, tokenizer):
    lines: list[str] = []
    methods = ("prompt", "amulet", "persona-judge", "pad-self")
    report = run_speed_benchmark(
        PAD(base_model, tokenizer), new_tokens=3, batch_size=2, repeats=1, methods=methods, log=lines.append
    )
    assert set(report.methods) == set(methods)
    for figures in report.methods.values():
        assert figures["tps_batch1"] > 0 and figures["tps_batch"] > 0
        assert abs(figures["vs_plain_batch1"] - figures["tps_batch1"] / report.plain_tps) < 1e-9
        assert abs(figures["vs_plain_batch"] - figures["tps_batch"] / report.plain_batch8_tps) < 1e-9
    assert any(line.startswith("persona-judge, batch 2") for line in lines)
    with pytest.raises(PadkitError, match="unknown method.*bogus"):
        run_speed_benchmark(PAD(base_model, tokenizer), new_tokens=2, batch_size=2, methods=("bogus",))
