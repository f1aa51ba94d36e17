"""Fixtures shared by the conversion and server tests: real model files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.model.files import MODELS_DIR, ensure_default_model
from tests.tiny_llama import tiny_llama_checkpoint, tiny_llama_gguf  # noqa: F401


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Gemma 3 270M Q4_K_M: a small real chat model with its own chat template."""
    return ensure_default_model(MODELS_DIR)
