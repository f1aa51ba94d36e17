"""The chat page in headless Chromium, against real gunicorn (API key set) serving Gemma 3 270M.

Playwright drives Debian's /usr/bin/chromium, else the Chromium Playwright downloaded
(`make test` installs one of them). A person's path: enter the key, ask, watch the answer
stream in as Markdown with the model's name and tokens/s, ask for a long story and press
Stop; the server must really stop (its metrics count a cancelled generation).

The Markdown and raw-HTML tests need an exact answer text, which a real model does not
write on demand: the real server answers, and only the text of its stream is swapped for
a crafted one on the way to the page (Playwright's route). Screenshots are saved; their
paths are printed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import metric
from tests.server.gunicorn_util import API_KEY, KEYED

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
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
pytestmark = pytest.mark.slow
SERVED = "gemma-3-270m-q4_k_m"  # what the keyed server serves by default: its file's stem
RATE = re.compile(r"^(done|stopped at max tokens) · \d+ tokens? · [\d.]+ tokens/s$")


def answered_by(model: str) -> re.Pattern:
    """The line under an answer: the model's name, how many tokens and how fast."""
    return re.compile(rf"^{re.escape(model)} · \d+ tokens? · [\d.]+ tokens/s$")


# Counts the distinct texts the newest answer bubble has shown: more than one means it streamed in.
WATCH_ANSWER = """() => {
  window.answerStates = new Set();
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('.message.assistant');
    const last = bubbles[bubbles.length - 1];
    if (last && last.textContent) window.answerStates.add(last.textContent);
  }).observe(document.getElementById('conversation'), {childList: true, subtree: true, characterData: true});
}"""
# Every Content-Security-Policy refusal on the page (an inline style or handler the page should not make).
RECORD_CSP_VIOLATIONS = """window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective));"""


@pytest.fixture(scope="module")
def browser(keyed_server, tmp_path_factory):
    """One Chromium profile for the module: the API key saved by the first test is kept for the others."""
    with sync_playwright() as p:
        if DEBIAN_CHROMIUM.exists():
            executable = str(DEBIAN_CHROMIUM)
        elif Path(p.chromium.executable_path).exists():
            executable = None  # Playwright's own
        else:
            pytest.skip("needs Chromium: apt-get install chromium, or python -m playwright install chromium")
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True, args=FLAGS
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=keyed_server[1])
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        context.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser, keyed_server):
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.goto(keyed_server[1] + "/")
    return page


@pytest.fixture
def fresh_page(browser, keyed_server):
    """A new tab with the API key saved and few tokens per answer."""
    page = browser.new_page()
    page.goto(keyed_server[1] + "/")
    page.evaluate(
        "key => { localStorage.setItem('laptop-llama.api-key', key); "
        "localStorage.setItem('laptop-llama.max-tokens', '4'); }",
        API_KEY,
    )
    page.reload()
    yield page
    page.close()


def open_settings(page) -> None:
    if not page.is_visible("#api-key"):
        page.click("summary")


def set_field(page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.dispatch_event(selector, "change")  # the page saves settings on change


def answer_with(page, pieces: list[str]) -> None:
    """Let the real server answer the page's next question, but with `pieces` as the text of its stream."""

    def swap(route):
        real = route.fetch()
        events = [e for e in real.text().split("\n\n") if e.startswith("data: {")]
        chunks = [json.loads(e[len("data: ") :]) for e in events]
        texts = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert texts, f"the server sent no text: {real.text()}"
        template = chunks[texts[0]]
        crafted = [{**template, "choices": [{**template["choices"][0], "delta": {"content": p}}]} for p in pieces]
        stream = chunks[: texts[0]] + crafted + chunks[texts[-1] + 1 :]
        route.fulfill(response=real, body="".join(f"data: {json.dumps(c)}\n\n" for c in stream) + "data: [DONE]\n\n")

    page.route("**/v1/chat/completions", swap)


def ask(page, question: str) -> None:
    page.fill("#query", question)
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_have_text(RATE)


def screenshot(page, tmp_path_factory, name: str) -> None:
    shot = tmp_path_factory.mktemp("screenshots") / name
    page.screenshot(path=str(shot), full_page=True)
    print(f"chat page screenshot: {shot}")
    assert shot.stat().st_size > 0


def test_the_api_key_is_entered_once_and_kept(page, keyed_server):
    expect(page.locator("#model")).to_contain_text("API key")
    expect(page.locator("#api-key")).to_be_focused()  # the page opened its settings at the key's field
    open_settings(page)
    set_field(page, "#api-key", API_KEY)
    served = SERVED  # the default model, by its name in the library
    expect(page.locator("#model")).to_have_text(served)
    page.reload()
    assert page.input_value("#api-key") == API_KEY  # from localStorage
    expect(page.locator("#model")).to_have_text(served)


def test_an_answer_streams_in_as_markdown_with_model_and_tokens_per_second(page, keyed_server):
    open_settings(page)
    set_field(page, "#max-tokens", "12")
    set_field(page, "#temperature", "0")
    page.evaluate(WATCH_ANSWER)
    ask(page, "Name three colors.")
    bubble = page.locator(".message.assistant").last
    assert bubble.text_content().strip()
    assert bubble.locator("p, ul, ol, h1, h2, h3, h4, pre, table").count() > 0, bubble.inner_html()
    assert page.evaluate("window.answerStates.size") > 1, "the answer arrived in one piece, not streamed"
    expect(page.locator(".meta").last).to_have_text(answered_by(SERVED))
    assert page.locator(".message.user").last.text_content() == "Name three colors."
    assert page.is_enabled("#send") and not page.is_enabled("#stop")


def test_stop_cancels_the_generation(page, keyed_server, tmp_path_factory):
    base = keyed_server[1]
    cancelled = 'finish_reason="cancelled"'
    before = metric(
        requests.get(f"{base}/metrics", headers=KEYED, timeout=5).text, "llama_server_generations_total", cancelled
    )
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
        metric(
            requests.get(f"{base}/metrics", headers=KEYED, timeout=5).text, "llama_server_generations_total", cancelled
        )
        != before + 1
    ):
        assert time.monotonic() < deadline, "the server did not cancel the generation"
        time.sleep(0.2)
    assert page.locator(".message.assistant").last.text_content() == shown  # nothing more arrived
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    screenshot(page, tmp_path_factory, "chat-page.png")


# Split mid-table and mid-code-block: the page re-renders the whole answer as each piece arrives.
MARKDOWN = [
    "## Three colours\n\n",
    "- red\n- green\n- blue\n\n",
    "| colour | hex |\n|:--|--:|\n",
    "| red | `#f00` |\n| green | `#0f0` |\n\n",
    "Print one:\n\n```python\nprint('red",
    "')\n```\n",
]


def test_markdown_renders_headings_lists_tables_and_code_with_a_copy_button(fresh_page, tmp_path_factory):
    page = fresh_page
    answer_with(page, MARKDOWN)
    ask(page, "Three colours, as Markdown.")
    bubble = page.locator(".message.assistant").last
    expect(bubble.locator("h2")).to_have_text("Three colours")
    expect(bubble.locator("ul > li")).to_have_text(["red", "green", "blue"])
    expect(bubble.locator("table th")).to_have_text(["colour", "hex"])
    expect(bubble.locator("table td")).to_have_text(["red", "#f00", "green", "#0f0"])
    assert bubble.locator("td.align-right code").count() == 2  # the hex column, right-aligned by class
    expect(bubble.locator(".code pre code")).to_have_text("print('red')\n")
    expect(bubble.locator(".code .code-bar")).to_contain_text("python")
    copy = bubble.locator(".code button.copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "print('red')\n"
    model = page.locator("#model").text_content()
    expect(page.locator(".meta").last).to_have_text(answered_by(model))
    assert page.evaluate("window.cspViolations") == []  # no inline style or script was needed
    screenshot(page, tmp_path_factory, "chat-page-markdown.png")


HOSTILE = [
    "<script>window.pwned = 'script'</script>\n\n",
    "<img src=x onerror=\"window.pwned = 'img'\">\n\n",
    "[click me](javascript:window.pwned='link') and <b>bold</b>",
]


def test_raw_html_in_an_answer_is_shown_as_text_and_never_runs(fresh_page):
    page = fresh_page
    answer_with(page, HOSTILE)
    question = "<img src=y onerror=\"window.pwned = 'question'\">"
    ask(page, question)
    bubble = page.locator(".message.assistant").last
    expect(bubble).to_contain_text("<script>window.pwned = 'script'</script>")
    expect(bubble).to_contain_text("<img src=x onerror=\"window.pwned = 'img'\">")
    expect(bubble).to_contain_text("[click me](javascript:window.pwned='link') and <b>bold</b>")
    assert page.locator(".message.user").last.text_content() == question
    assert page.locator("#conversation").locator("script, img, b, a").count() == 0
    page.wait_for_timeout(500)  # time for a broken image's error event, had there been one
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("window.cspViolations") == []


# Records whether the spinner was ever shown (a load can be quicker than a look at the page).
WATCH_SPINNER = """() => {
  window.spinnerShown = false;
  const spinner = document.getElementById('model-loading');
  new MutationObserver(() => { if (!spinner.hidden) window.spinnerShown = true; })
    .observe(spinner, {attributes: true});
}"""


def test_the_model_picker_lists_the_library_and_loads_the_chosen_model(page, keyed_server, smollm2_gguf):
    smol = smollm2_gguf.stem
    open_settings(page)
    set_field(page, "#api-key", API_KEY)
    requests.post(f"{keyed_server[1]}/models/unload", json={"model": smol}, headers=KEYED, timeout=10)
    page.reload()
    picker = page.locator("#model-picker")
    expect(picker).to_be_visible()
    expect(picker.locator(f'option[value="{SERVED}"]')).to_have_text(f"{SERVED} (loaded)")
    expect(picker.locator(f'option[value="{smol}"]')).to_have_text(smol)  # in the library, not loaded
    page.evaluate(WATCH_SPINNER)
    picker.select_option(smol)
    expect(picker.locator(f'option[value="{smol}"]')).to_have_text(f"{smol} (loaded)", timeout=120_000)
    assert page.evaluate("window.spinnerShown"), "no spinner while the model loaded"
    expect(page.locator("#model-loading")).to_be_hidden()
    expect(page.locator("#model")).to_have_text(smol)
    open_settings(page)
    set_field(page, "#max-tokens", "4")
    ask(page, "Say hi.")
    expect(page.locator(".meta").last).to_have_text(answered_by(smol))  # the answer came from the chosen model
    requests.post(f"{keyed_server[1]}/models/unload", json={"model": smol}, headers=KEYED, timeout=10)
