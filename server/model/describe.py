"""What is being served: model facts for /api/health and the start-up log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from server.model.chat_templates import BY_ARCHITECTURE
from server.model.files import ModelChoice
from server.model.parallel import ParallelPlan
from server.settings import Settings

log = logging.getLogger("server")


def default_model_notice(model: ModelChoice) -> str:
    """What the log and /api/health say when the small embedded model is served."""
    return (
        f"serving the small embedded default model ({model.path.name}), not Llama 2. To serve Llama 2: "
        "accept Meta's licence on Hugging Face, log in (`hf auth login` or HF_TOKEN), run `make quantize` "
        "(writes models/llama-2-7b-chat.Q4_K_M.gguf, which is then served by default), or set "
        "LLAMA_SERVER_MODEL to any GGUF file"
    )


def chat_template(settings: Settings, metadata: dict[str, str]) -> tuple[str | None, str]:
    """(template, label): the settings' template file, else the GGUF's own, else the
    architecture's built-in format, else (None, "llama-2") for the Llama-2-chat format."""
    if settings.chat_template:
        return Path(settings.chat_template).expanduser().read_text(encoding="utf-8"), "chat template"
    if template := metadata.get("tokenizer.chat_template"):
        return template, "chat template"
    arch = metadata.get("general.architecture", "")
    if arch in BY_ARCHITECTURE:
        return BY_ARCHITECTURE[arch], f"built-in {arch}"
    return None, "llama-2"


def quantization(metadata: dict[str, str]) -> str:
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(metadata["general.file_type"])).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError):
        return "unknown"


def model_info(
    model: ModelChoice, metadata: dict[str, str], n_ctx: int, plan: ParallelPlan, prompt_format: str
) -> dict[str, Any]:
    """`plan`: the server.model.parallel.ParallelPlan (slots, and the offload plan made with them)."""
    return {
        "model": metadata.get("general.name") or model.path.stem,
        "file": str(model.path),
        "architecture": metadata.get("general.architecture", "unknown"),
        "quantization": quantization(metadata),
        "n_ctx": n_ctx,
        "prompt_format": prompt_format,
        "backend": plan.offload.backend,
        "offload": plan.offload.as_dict(),
        "parallel": plan.as_dict(),
        "default_model": model.is_default,
        **({"notice": default_model_notice(model)} if model.is_default else {}),
    }


def announce(info: dict[str, Any], model: ModelChoice) -> None:
    off, par = info["offload"], info["parallel"]
    log.info(
        "model %s (%s, %s) from %s, n_ctx %d per request, prompt format: %s",
        info["model"],
        info["architecture"],
        info["quantization"],
        info["file"],
        info["n_ctx"],
        info["prompt_format"],
    )
    log.info(
        "offload (%s): %d/%d layers on GPU, backend %s, device %s, VRAM planned %d MiB of %s MiB free; %s",
        off["mode"],
        off["n_gpu_layers"],
        off["total_layers"],
        off["backend"],
        off["device"] or "-",
        off["vram_planned_mb"],
        off["vram_free_mb"] if off["vram_free_mb"] is not None else "-",
        off["reason"],
    )
    log.info(
        "parallel (%s): %d slots x %d tokens, KV cache %d MiB (%.1f KiB per token), RAM available %s MiB; %s",
        par["mode"],
        par["n_parallel"],
        info["n_ctx"],
        par["kv_cache_mb"],
        par["kv_bytes_per_token"] / 1024,
        par["ram_available_mb"] if par["ram_available_mb"] is not None else "-",
        par["reason"],
    )
    log.info(
        "prompt cache: up to %d MiB of RAM for the states of prompts that slots give up%s",
        info["prompt_cache_mib"],
        "" if info["prompt_cache_mib"] else " (off)",
    )
    if model.is_default:
        banner = "!" * 78
        log.warning("%s\n%s\n%s", banner, default_model_notice(model), banner)
