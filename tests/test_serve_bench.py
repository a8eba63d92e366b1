"""The serving benchmark: a seeded Poisson schedule, both batchers under it, every request answered."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from padkit import PAD
from padkit.errors import PadkitError
from padkit.evaluation.serve_bench import poisson_arrivals, run_load, run_serve_benchmark


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate():
    times = poisson_arrivals(4.0, 4000, seed=1)
    assert times == poisson_arrivals(4.0, 4000, seed=1) and times != poisson_arrivals(4.0, 4000, seed=2)
    assert times[0] == 0 and all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert abs(len(times) / times[-1] - 4.0) < 0.25


def test_both_batchers_answer_every_request(base_model, tokenizer):
    report = run_serve_benchmark(
        PAD(base_model, tokenizer, base_name="tiny"), rate=30.0, requests=6, max_tokens=6, preferences=("concise", None)
    )
    assert [r.name for r in report.results] == ["static", "continuous"]
    for result in report.results:
        assert result.completed == 6 and result.failed == 0
        assert 0 < result.ttft_p50_s <= result.ttft_p95_s and result.tpot_p50_s > 0
        assert result.tokens > 0 and result.tokens_per_s == pytest.approx(result.tokens / result.wall_s)
    assert report.ratio("ttft_p95_s") == pytest.approx(report.results[1].ttft_p95_s / report.results[0].ttft_p95_s)
    json.dumps(report.as_dict())


def test_load_goes_to_localhost_only():
    with pytest.raises(PadkitError, match="127.0.0.1 only"):
        run_load("http://example.com:8000", [0.0], ["Hi"], [None], 4)


def test_cli_refuses_bad_settings():
    from padkit.cli.main import app

    result = CliRunner().invoke(app, ["bench", "serve", "--url", "http://10.0.0.1:8000", "--requests", "1"])
    assert result.exit_code == 2 and "127.0.0.1 only" in result.output
    result = CliRunner().invoke(app, ["bench", "serve", "--url", "http://127.0.0.1:1", "--rate", "0"])
    assert result.exit_code == 2 and "rate must be positive" in result.output
