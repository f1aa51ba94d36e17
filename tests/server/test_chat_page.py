"""The chat page in headless Chromium, against real gunicorn (API key set) serving Gemma 3 270M.

Playwright drives Debian's /usr/bin/chromium (never a browser of its own). A
person's path: enter the key, ask, watch the answer stream in with tokens/s,
ask for a long story and press Stop; the server must really stop (its metrics
count a cancelled generation). A screenshot of the page is saved; its path is printed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import metric
from tests.server.gunicorn_util import API_KEY

CHROMIUM = Path("/usr/bin/chromium")
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
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]

# Counts the distinct texts the newest answer bubble has shown: more than one means it streamed in.
WATCH_ANSWER = """() => {
  window.answerStates = new Set();
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('.message.assistant');
    const last = bubbles[bubbles.length - 1];
    if (last && last.textContent) window.answerStates.add(last.textContent);
  }).observe(document.getElementById('conversation'), {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def page(keyed_server, tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        context.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(keyed_server[1] + "/")
        yield page
        context.close()


def open_settings(page) -> None:
    if not page.is_visible("#api-key"):
        page.click("summary")


def set_field(page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.dispatch_event(selector, "change")  # the page saves settings on change


def test_the_api_key_is_entered_once_and_kept(page, keyed_server):
    expect(page.locator("#model")).to_contain_text("API key")
    open_settings(page)
    set_field(page, "#api-key", API_KEY)
    served = requests.get(f"{keyed_server[1]}/api/health", timeout=5).json()["model"]
    expect(page.locator("#model")).to_have_text(served)
    page.reload()
    assert page.input_value("#api-key") == API_KEY  # from localStorage
    expect(page.locator("#model")).to_have_text(served)


def test_an_answer_streams_in_with_tokens_per_second(page):
    open_settings(page)
    set_field(page, "#max-tokens", "12")
    set_field(page, "#temperature", "0")
    page.evaluate(WATCH_ANSWER)
    page.fill("#query", "Name three colors.")
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_have_text(
        re.compile(r"^(done|stopped at max tokens) · \d+ tokens? · [\d.]+ tokens/s$")
    )
    answer = page.locator(".message.assistant").last.text_content()
    assert answer.strip()
    assert page.evaluate("window.answerStates.size") > 1, "the answer arrived in one piece, not streamed"
    assert page.locator(".message.user").last.text_content() == "Name three colors."
    assert page.is_enabled("#send") and not page.is_enabled("#stop")


def test_stop_cancels_the_generation(page, keyed_server, tmp_path_factory):
    base = keyed_server[1]
    cancelled = 'finish_reason="cancelled"'
    before = metric(requests.get(f"{base}/metrics", timeout=5).text, "llama_server_generations_total", cancelled)
    set_field(page, "#max-tokens", "250")
    set_field(page, "#temperature", "1")
    page.fill("#query", "Tell me a very long story about the sea.")
    page.click("#send")
    # Some way into the story, so that the screenshot shows a stopped answer and its rate.
    expect(page.locator(".message.assistant").nth(1)).to_have_text(re.compile(r"\S[\s\S]{30}"))
    page.click("#stop")
    expect(page.locator("#status")).to_have_text(re.compile(r"^stopped · "))
    shown = page.locator(".message.assistant").last.text_content()
    deadline = time.monotonic() + 30
    while (
        metric(requests.get(f"{base}/metrics", timeout=5).text, "llama_server_generations_total", cancelled)
        != before + 1
    ):
        assert time.monotonic() < deadline, "the server did not cancel the generation"
        time.sleep(0.2)
    assert page.locator(".message.assistant").last.text_content() == shown  # nothing more arrived
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    shot = tmp_path_factory.mktemp("screenshots") / "chat-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"chat page screenshot: {shot}")
    assert shot.stat().st_size > 0
