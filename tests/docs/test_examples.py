"""The examples in README.md and docs/ run, against a real server, and answer in the shape they promise.

One gunicorn serves SmolLM2-135M-Instruct (as `make serve` does on a fresh checkout) with small limits;
each example marked `run` is run as a reader would run it, with 127.0.0.1:8000 replaced by that server's
address: shell blocks through bash (`set -e`, `pipefail`: any failing command fails it, curl's included),
Python blocks with this Python and its official `openai` and `ollama` packages. An example that is not
marked at all fails here, so a new one is either run or says why it cannot be (tests/docs/examples.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.docs.examples import DEFAULT_ADDRESS, ROOT, Example, all_examples, json_documents
from tests.server.gunicorn_util import run_gunicorn

EXAMPLES = all_examples()
RUNNABLE = [example for example in EXAMPLES if example.marker == "run"]


def test_every_example_says_whether_it_runs():
    unmarked = [example.name for example in EXAMPLES if example.marker is None]
    assert not unmarked, f"add <!-- run --> or <!-- illustrative: why --> before each of: {unmarked}"
    # The suite finds the examples at all, in the README and in the docs.
    assert {e.path.name for e in RUNNABLE} >= {"README.md", "getting-started.md", "api-respond.md", "api-openai.md"}
    assert all(e.detail for e in EXAMPLES if e.marker == "illustrative"), "say why an example is only illustrative"


@pytest.fixture(scope="module")
def address(smollm2_gguf, tmp_path_factory) -> str:
    """host:port of a real gunicorn serving the default model, answers short (MAX_TOKENS 8)."""
    with run_gunicorn(smollm2_gguf, tmp_path_factory.mktemp("docs-examples")) as (_, base):
        yield base.removeprefix("http://")


def run(example: Example, address: str) -> subprocess.CompletedProcess:
    code = example.code.replace(DEFAULT_ADDRESS, address)
    command = ["bash", "-e", "-o", "pipefail", "-c", code] if example.language == "sh" else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("example", RUNNABLE, ids=[example.name for example in RUNNABLE])
def test_the_example_runs_and_answers(example: Example, address: str):
    done = run(example, address)
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"{example.name} printed nothing:\n{done.stderr[-2000:]}"
    if not example.prints_json:
        return
    try:
        found = json_documents(done.stdout)
    except ValueError as exc:
        pytest.fail(f"{example.name} printed something that is not JSON ({exc}):\n{done.stdout[-2000:]}")
    keys = {key for document in found if isinstance(document, dict) for key in document}
    missing = [key for key in example.expected_keys if key not in keys]
    assert not missing, f"{example.name}: no {missing} in its output:\n{done.stdout[-2000:]}"
