"""Take the README's playground screenshot against a running `padkit serve` (default http://127.0.0.1:8765).

padkit serve --port 8765 &
python scripts/screenshot_playground.py docs/img/playground.png
"""

from __future__ import annotations

import shutil
import sys

from playwright.sync_api import sync_playwright

URL = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8765"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    page.goto(URL + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    page.fill("#prompt", "Why do cats sleep so much?")
    page.fill("#max-tokens", "60")
    set_range = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    page.eval_on_selector("#slider-concise", set_range, -1)
    page.eval_on_selector("#slider-elementary", set_range, -0.5)
    page.eval_on_selector("#weight", set_range, 2)
    page.eval_on_selector("#weight", "el => el.dispatchEvent(new Event('input'))")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=120000)
    page.locator("#pad-answer .tok").nth(3).hover()
    page.screenshot(path=sys.argv[1], full_page=True)
    browser.close()
