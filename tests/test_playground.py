"""The playground page in a real headless Chromium (Debian's package), driven by Playwright, on a live server."""

from __future__ import annotations

import os
import shutil

import httpx2 as httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("PADKIT_REQUIRE_BROWSER") != "1":
    pytest.skip(
        "no system Chromium (apt-get install chromium); CI sets PADKIT_REQUIRE_BROWSER=1", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from conftest import running_server

    with running_server(tmp_path_factory.mktemp("db"), default_weight=1.5, max_tokens_limit=64, window_s=0.05) as (
        server,
        url,
    ):
        yield server, url


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "PADKIT_REQUIRE_BROWSER=1 but no chromium on PATH"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(live[1] + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    yield page
    context.close()


def _set_range(page, selector: str, value: float) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )


def test_move_a_slider_generate_and_see_both_answers(page, live):
    server, _ = live
    assert "tiny" in page.inner_text("#model-info")
    assert page.input_value("#weight") == "1.5" == page.inner_text("#weight-value")  # the server's default
    from padkit.preferences import CATALOG

    pairs = sum(1 for d in CATALOG.values() if d.opposite) // 2
    singles = sum(1 for d in CATALOG.values() if not d.opposite)
    assert page.locator("#sliders input[type=range]").count() == pairs + singles  # opposites share one slider
    page.fill("#prompt", "Tell me about cats.")
    page.fill("#max-tokens", "8")
    _set_range(page, "#slider-concise", -1)  # the concise <-> detailed slider, fully to concise
    _set_range(page, "#weight", 2)
    assert page.inner_text("#preference-preview") == "concise=1"
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=30000)
    base = server.pad.generate(["Tell me about cats."], method="base", max_new_tokens=8)[0].text
    guided = server.pad.generate(["Tell me about cats."], "concise", weight=2.0, max_new_tokens=8)[0].text
    assert page.inner_text("#base-answer") == base
    assert page.eval_on_selector("#pad-answer", "el => el.textContent") == guided
    assert base != guided


def test_hover_a_token_to_see_its_reward(page, live):
    server, _ = live
    page.fill("#prompt", "Why is the sky blue?")
    page.fill("#max-tokens", "6")
    _set_range(page, "#slider-friendly", 1)  # the friendly <-> unfriendly slider, fully to unfriendly
    page.fill("#free-text", "talks like a pirate")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=30000)
    tokens = page.locator("#pad-answer .tok")
    assert tokens.count() >= 1
    expected = server.pad.generate(
        ["Why is the sky blue?"],
        [{"dimension": "unfriendly", "weight": 1.0}, {"dimension": "talks like a pirate", "weight": 1.0}],
        weight=1.5,  # the page starts at the server's default strength (the fixture's 1.5)
        max_new_tokens=6,
        diagnostics=True,
    )[0]
    tokens.first.hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible", timeout=5000)
    text = tip.inner_text()
    assert f"reward {expected.tokens[0].reward:.2f}" in text
    assert f"base log-prob {expected.tokens[0].base_logprob:.2f}" in text
    assert tip.locator("tr").count() == len(expected.tokens[0].alternatives) + 1
    reward = float(tokens.first.get_attribute("data-reward"))
    assert reward == pytest.approx(expected.tokens[0].reward, abs=1e-4)


def test_save_profile_then_read_it_back_through_the_api(page, live):
    _, url = live
    _set_range(page, "#slider-elementary", -1)
    _set_range(page, "#slider-humorous", 0.5)
    _set_range(page, "#weight", 3)
    page.fill("#user", "carol")
    page.click("#save-profile")
    page.wait_for_function("document.querySelector('#profile-status').textContent.startsWith('Saved')")
    profile = httpx.get(f"{url}/v1/profiles/carol").json()
    assert profile["preference"] == [
        {"dimension": "elementary", "weight": 1.0},
        {"dimension": "humorous", "weight": 0.5},
    ]
    assert profile["alignment_weight"] == 3.0


def test_the_page_fits_a_phone_width_window(browser, live):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(live[1] + "/")
    page.wait_for_selector("body[data-ready=true]")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    base_box, pad_box = page.locator("#base-answer").bounding_box(), page.locator("#pad-answer").bounding_box()
    assert pad_box["y"] > base_box["y"]  # stacked, not side by side
    context.close()
