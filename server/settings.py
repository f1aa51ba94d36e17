"""The server's settings: one frozen dataclass, read from LLAMA_SERVER_* variables.

The dataclass is the single table of settings: each field carries its default,
its parser (text -> value) and its check in the field metadata, so the variable
name, the default and the validation live in one place. Precedence is
CLI flag > environment variable > default: `python -m server` lays its flags over
the environment (server/__main__.py) and `Settings.from_env` reads the result.
A bad value raises SettingsError naming the variable; the entry points turn it
into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

ENV_PREFIX = "LLAMA_SERVER_"


@dataclass(frozen=True)
class KvType:
    ggml: int  # llama.cpp's ggml_type id
    bytes: float  # bytes per element (quantized types: block bytes / 32)
    quantized: bool = False  # llama.cpp stores a quantized V cache only with flash attention


# The one table of KV cache element types, by the name people write (llama-server's
# --cache-type-k names); settings, the context parameters and the memory plans read it.
KV_CACHE_TYPES = {
    "f32": KvType(0, 4.0),
    "f16": KvType(1, 2.0),
    "bf16": KvType(30, 2.0),
    "q8_0": KvType(8, 34 / 32, True),
    "q5_1": KvType(7, 24 / 32, True),
    "q5_0": KvType(6, 22 / 32, True),
    "q4_1": KvType(3, 20 / 32, True),
    "q4_0": KvType(2, 18 / 32, True),
    "iq4_nl": KvType(20, 18 / 32, True),
}


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


def env_name(attr: str) -> str:
    return ENV_PREFIX + attr.upper()


def physical_cores() -> int:
    """Physical cores this process may run on: llama.cpp gains nothing from SMT siblings."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores, cpu = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            info: dict[str, str] = {}
            for line in list(f) + ["\n"]:
                key, _, value = line.partition(":")
                if line.strip():
                    info[key.strip()] = value.strip()
                    continue
                cpu = int(info.get("processor", -1))
                if cpu in allowed and "core id" in info:
                    cores.add((info.get("physical id"), info["core id"]))
                info = {}
    except (OSError, ValueError):
        pass
    return len(cores) or len(allowed) or 1


# Parsers: text from the environment -> typed value (ValueError saying what was expected).
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def _bool(text: str) -> bool:
    table = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    try:
        return table[text.strip().lower()]
    except KeyError:
        raise ValueError("expected one of 1/0, true/false, yes/no, on/off") from None


def _optional_str(text: str) -> str | None:
    return text or None


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list, lower-cased (host names and origins compare without case)."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _gpu_layers(text: str) -> int | str:
    text = text.strip().lower()
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected auto or a whole number") from None


_auto_or_int = _gpu_layers  # PARALLEL and CACHE_RAM: "auto" or a number


def _flash_attn(text: str) -> str:
    text = text.strip().lower()
    return "auto" if text == "auto" else ("on" if _bool(text) else "off")


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(-?)((?:\d+(?:\.\d*)?(?:ms|s|m|h))+)$")


def parse_duration(value: Any) -> float | None:
    """Seconds from Ollama's keep_alive: a number of seconds or a Go duration ("5m", "1h30m",
    "-1m"); None (forever) for a negative value. ValueError saying what was expected."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5m, 30s or 1h, or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        match = _DURATION.match(text)
        if match is None:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError("expected a duration like 5m, 30s or 1h, or a number of seconds") from None
        else:
            parts = re.findall(r"(\d+(?:\.\d*)?)(ms|s|m|h)", match.group(2))
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts) * (-1 if match.group(1) else 1)
    if seconds != seconds or abs(seconds) == float("inf"):
        raise ValueError("expected a finite duration")
    return None if seconds < 0 else seconds


def _duration(text: str) -> float | None:
    return parse_duration(text)


def _tensor_split(text: str) -> tuple[float, ...] | None:
    return tuple(_float(part) for part in text.split(",")) if text.strip() else None


# Checks: value -> problem text, or None when fine.
def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _one_of(choices) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def _gpu_layers_ok(v) -> str | None:
    return None if v == "auto" or (isinstance(v, int) and v >= -1) else "must be auto, -1 (all) or a count >= 0"


def _parallel_ok(v) -> str | None:
    return None if v == "auto" or (isinstance(v, int) and v >= 1) else "must be auto or a count >= 1"


def _cache_ram_ok(v) -> str | None:
    return None if v == "auto" or (isinstance(v, int) and v >= 0) else "must be auto or MiB >= 0"


def _split_ok(v) -> str | None:
    return None if v is None or (all(x >= 0 for x in v) and sum(v) > 0) else "must be non-negative weights, not all 0"


def _hosts_ok(v) -> str | None:
    bad = [h for h in v if not h or "/" in h or h.count(":") == 1 or " " in h]
    return f"{bad[0]!r} is not a host name (no scheme, port or path)" if bad else None


def _origins_ok(v) -> str | None:
    pattern = re.compile(r"^https?://[^/\s]+$")
    bad = [o for o in v if not pattern.match(o)]
    return f"{bad[0]!r} is not an origin like https://example.com or http://localhost:3000" if bad else None


def _file_ok(v) -> str | None:
    """A path that must name a file (what is in it is checked where it is loaded)."""
    from pathlib import Path

    return None if v is None or Path(v).expanduser().is_file() else f"no such file: {v}"


def _system_prompt(text: str) -> str:
    from server.safety.presets import system_prompt  # named prompts: plain text, no imports

    return system_prompt(text)


def _codes(text: str) -> tuple[str, ...]:
    """Hazard category codes: "S6, s8" -> ("S6", "S8")."""
    return tuple(part.strip().upper() for part in text.split(",") if part.strip())


def _codes_ok(v) -> str | None:
    bad = [c for c in v if not re.fullmatch(r"S(?:[1-9]|1[0-4])", c)]
    return f"{bad[0]!r} is not a category code S1 ... S14" if bad else None


def setting(default, parse: Callable[[str], Any] = str, check=None, help: str = "", factory=None, secret=False):
    meta = {"parse": parse, "check": check, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    # Secrets stay out of repr() so a logged Settings never leaks them.
    return field(default=default, metadata=meta, repr=not secret)


AUTO_PARALLEL_MAX = 4  # the most slots PARALLEL=auto picks (server/model/parallel.py)

# llama.cpp's pooling types (LLAMA_POOLING_TYPE_*), by the names llama-server's --pooling takes.
POOLINGS = ("none", "mean", "cls", "last", "rank")


@dataclass(frozen=True)
class Settings:
    # Checked (exists, a whole GGUF file) by the entry points through server/model/files.py.
    model: str | None = setting(None, _optional_str, None, "a GGUF file to serve beside MODELS_DIR's (its default)")
    models_dir: str | None = setting(None, _optional_str, None, "folder of GGUF models (default: models/ here)")
    models_presets: str | None = setting(
        None, _optional_str, _file_ok, "TOML file of per-model settings and aliases (default: MODELS_DIR/presets.toml)"
    )
    default_model: str | None = setting(
        None, _optional_str, None, "model answering requests that name none (default: Llama 2 if made, else SmolLM2)"
    )
    keep_alive: float | None = setting(
        300.0, _duration, None, "how long a model stays loaded after its last request: 5m, 30s, 0 or -1 (forever)"
    )
    ram_budget_mb: int | None = setting(
        None,
        lambda t: int(t) if t else None,
        lambda v: None if v is None or v > 0 else "must be > 0",
        "RAM loaded models may take (default: what is available at start minus RAM_MARGIN_MB)",
    )
    ram_margin_mb: int = setting(1024, _int, _at_least(0), "RAM left to the rest of the machine by the default budget")
    n_ctx: int = setting(4096, _int, _at_least(64), "context of one request in tokens (every slot gets this much)")
    n_threads: int = setting(None, _int, _at_least(1), "CPU threads (default: physical cores)", factory=physical_cores)
    n_batch: int = setting(512, _int, _at_least(1), "prompt tokens per batch")
    n_gpu_layers: int | str = setting("auto", _gpu_layers, _gpu_layers_ok, "layers on GPU: 0, N, -1 (all) or auto")
    main_gpu: int = setting(0, _int, _at_least(0), "GPU index for the main device")
    tensor_split: tuple[float, ...] | None = setting(None, _tensor_split, _split_ok, "split across GPUs, e.g. 3,1")
    flash_attn: str = setting(
        "auto",
        _flash_attn,
        _one_of(("auto", "on", "off")),
        "flash attention: auto (where the backend has it), on/1 or off/0",
    )
    use_mlock: bool = setting(False, _bool, None, "lock the model in RAM")
    kv_cache_type: str = setting("f16", str.lower, _one_of(tuple(KV_CACHE_TYPES)), "KV cache element type")
    vram_budget_mb: int | None = setting(
        None,
        lambda t: int(t) if t else None,
        lambda v: None if v is None or v > 0 else "must be > 0",
        "VRAM loaded models may take together, and auto offload may plan for (default: free at start minus margin)",
    )
    vram_margin_mb: int = setting(512, _int, _at_least(0), "VRAM auto offload leaves free")
    host: str = setting("127.0.0.1", str, lambda v: None if v else "must not be empty", "address to bind")
    port: int = setting(8000, _int, _between(1, 65535), "TCP port")
    workers: int = setting(1, _int, _at_least(1), "gunicorn workers (each holds its own model)")
    http_threads: int = setting(
        32,
        _int,
        _at_least(1),
        "requests answered at once per worker (more than "
        "PARALLEL + QUEUE_SIZE, so health and metrics still answer under load)",
    )
    max_tokens: int = setting(512, _int, _at_least(1), "default max_tokens of a request")
    max_tokens_ceiling: int = setting(2048, _int, _at_least(1), "largest max_tokens a request may ask")
    # No default system prompt, as in llama.cpp and Ollama: Meta dropped Llama-2's for
    # causing refusals, and small models tend to echo one back as their answer.
    system_prompt: str = setting(
        "", _system_prompt, None, "system prompt when a request gives none; @llama2-safety: Llama 2's safety prompt"
    )
    chat_template: str | None = setting(None, _optional_str, None, "Jinja file overriding the model's chat template")
    parallel: int | str = setting(
        "auto", _auto_or_int, _parallel_ok, "requests decoded together (slots): auto (up to 4, as memory allows) or N"
    )
    prefill_chunk: int = setting(128, _int, _at_least(1), "prompt tokens per step while other requests are generating")
    prefix_cache: bool = setting(True, _bool, None, "idle slots keep their prompt for reuse by the next request")
    batch_invariant: bool = setting(
        True, _bool, None, "CPU: a request's logits never depend on what else is decoded (docs/determinism.md)"
    )
    cache_ram: int | str = setting(
        "auto",
        _auto_or_int,
        _cache_ram_ok,
        "MiB of RAM keeping prompt states that slots gave up, for reuse: auto (2048 "
        "unless every layer is on the GPU, then 0), N, or 0 (off)",
    )
    speculative: str = setting(
        "ngram",  # measured never slower: drafts that do not pay are not made (docs/serving.md)
        str.lower,
        _one_of(("off", "ngram", "draft")),
        "speculative decoding: off, ngram (drafts copied from the prompt and answer) or draft (DRAFT_MODEL)",
    )
    draft_max: int = setting(16, _int, _between(1, 64), "most tokens drafted for one request in one step")
    # Checked (exists, a whole GGUF file) by the entry points, as MODEL is.
    draft_model: str | None = setting(None, _optional_str, _file_ok, "GGUF draft model (same vocabulary)")
    draft_n_gpu_layers: int = setting(0, _int, _at_least(-1), "draft model layers on the GPU (-1: all)")
    pooling: str | None = setting(
        None,
        lambda t: t.strip().lower() or None,
        lambda v: None if v is None else _one_of(POOLINGS)(v),
        "embeddings: how a text's token vectors become one (none, mean, cls, last, rank); "
        "default: the model file's (embedding models), else the model does not embed",
    )
    embed_max_inputs: int = setting(2048, _int, _at_least(1), "most texts (or token lists) one embedding request holds")
    queue_size: int = setting(16, _int, _at_least(1), "requests waiting for a free slot")
    request_timeout: float = setting(300.0, _float, _at_least(1), "seconds a request may take, queue included")
    max_body_bytes: int = setting(1 << 20, _int, _at_least(1024), "largest request body")
    read_timeout: float = setting(
        30.0, _float, _at_least(0.1), "seconds a client has to send a whole request (head and body), else 408"
    )
    # Moderation with a guard model (server/safety/, docs/safety-layer.md).
    moderation: str = setting(
        "off", str.lower, _one_of(("off", "input", "output", "both")), "check requests, answers or both (GUARD_MODEL)"
    )
    guard_model: str | None = setting(None, _optional_str, None, "the library's Llama Guard model that moderates")
    guard_format: str = setting(
        "auto",
        str.lower,
        _one_of(("auto", "llama-guard-3", "llama-guard-3-1b", "llama-guard-2")),
        "the guard's prompt: auto (from the GGUF's name and metadata) or a Llama Guard version",
    )
    guard_exclude: tuple[str, ...] = setting(
        (), _codes, _codes_ok, "hazard categories left out of the guard's prompt, e.g. S6,S8"
    )
    guard_threshold: float = setting(0.5, _float, _between(0.0, 1.0), "P(unsafe) at which the guard flags")
    guard_failure: str = setting(
        "closed", str.lower, _one_of(("closed", "open")), "when the guard fails: closed (block) or open (let through)"
    )
    guard_timeout: float = setting(30.0, _float, _at_least(0.1), "seconds one guard check may take, queue included")
    moderation_refusal: str = setting("", str, None, "answer a flagged request with this text instead of a 400")
    moderation_stream: str = setting(
        "strict", str.lower, _one_of(("strict", "fast")), "streamed answers: strict (hold text until checked) or fast"
    )
    moderation_window: int = setting(64, _int, _at_least(2), "answer tokens per output check while streaming")
    moderation_overlap: int = setting(32, _int, _at_least(0), "tokens of the previous window each check repeats")
    api_key: str | None = setting(
        None, _optional_str, None, "bearer key required on every route but health and the page's files", secret=True
    )
    allowed_hosts: tuple[str, ...] = setting(
        (), _names, _hosts_ok, "host names besides localhost, IP addresses and HOST that requests may be addressed to"
    )
    allowed_origins: tuple[str, ...] = setting(
        (), _names, _origins_ok, "web origins whose pages may call the API (CORS), e.g. https://app.example.com"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata["check"]
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                raise SettingsError(f"{env_name(f.name)}: {problem}")
        if self.max_tokens > self.max_tokens_ceiling:
            raise SettingsError(
                f"{env_name('max_tokens')}: must not exceed "
                f"{env_name('max_tokens_ceiling')} ({self.max_tokens_ceiling})"
            )
        # llama.cpp only stores a quantized V cache with flash attention on.
        if KV_CACHE_TYPES[self.kv_cache_type].quantized and self.flash_attn != "on":
            raise SettingsError(f"{env_name('kv_cache_type')}: {self.kv_cache_type} needs {env_name('flash_attn')}=on")
        if (self.speculative == "draft") != (self.draft_model is not None):
            raise SettingsError(f"{env_name('speculative')}=draft and {env_name('draft_model')} go together")
        if self.moderation_overlap >= self.moderation_window:
            raise SettingsError(
                f"{env_name('moderation_overlap')}: must be less than {env_name('moderation_window')} "
                f"({self.moderation_window})"
            )
        if self.moderation != "off" and not self.guard_model:
            raise SettingsError(f"{env_name('moderation')}={self.moderation} needs {env_name('guard_model')}")
        # Every slot decodes one token per step, so a step must hold one per slot.
        if isinstance(self.parallel, int) and self.parallel > self.n_batch:
            raise SettingsError(f"{env_name('parallel')}: must not exceed {env_name('n_batch')} ({self.n_batch})")
        # Every running or queued answer holds an HTTP thread for its whole length (a stream
        # does): with none left over, /api/health and /metrics would wait behind them.
        busy = (self.parallel if isinstance(self.parallel, int) else AUTO_PARALLEL_MAX) + self.queue_size
        if self.http_threads <= busy:
            raise SettingsError(
                f"{env_name('http_threads')}: {self.http_threads} threads would all be taken by "
                f"{env_name('parallel')} + {env_name('queue_size')} ({busy}) open answers; "
                f"set it to at least {busy + 1}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from LLAMA_SERVER_* variables (`environ`, else the process's); defaults fill the rest."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if env_name(f.name) in environ:
                text = environ[env_name(f.name)]
                try:
                    values[f.name] = f.metadata["parse"](text.strip())
                except ValueError as exc:
                    raise SettingsError(f"{env_name(f.name)}={text!r}: {exc}") from None
        return cls(**values)

    @property
    def kv_cache_ggml_type(self) -> int:
        return KV_CACHE_TYPES[self.kv_cache_type].ggml
