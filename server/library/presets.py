"""The presets file (MODELS_PRESETS, TOML): per-model settings, aliases and new names.

    [models.smollm2-135m-instruct-q4_1]     # a model of the library, by name
    aliases = ["small"]
    n_ctx = 2048
    keep_alive = "10m"
    temperature = 0.2                       # a default, when a request gives none

    [models.coder]                          # a new name: `from` another model, or a `file`
    from = "smollm2-135m-instruct-q4_1"     # same weights, never a second copy (/api/copy writes these)
    parallel = 1

Server settings a preset may set are the ones in PRESET_SETTINGS, parsed and checked by the
one settings table (server/settings.py); sampling defaults are checked by the caller's
`check_sampling` (the HTTP layer owns those limits). A bad preset raises SettingsError
naming the file, the model and the key, which stops the server at start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from server.settings import Settings, SettingsError, parse_duration

# Server settings a model may have of its own (everything else is the server's).
PRESET_SETTINGS = (
    "n_ctx",
    "parallel",
    "n_gpu_layers",
    "n_batch",
    "kv_cache_type",
    "flash_attn",
    "chat_template",
    "system_prompt",
    "speculative",
    "draft_model",
    "draft_n_gpu_layers",
    "draft_max",
    "cache_ram",
    "prefix_cache",
    "batch_invariant",
)
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
OWN_KEYS = ("aliases", "from", "file", "keep_alive", "pinned")
# Paths in a preset are relative to the presets file.
PATH_SETTINGS = ("chat_template", "draft_model")

SamplingCheck = Callable[[str, Any], str | None]  # (key, value) -> problem or None


@dataclass(frozen=True)
class Preset:
    name: str
    aliases: tuple[str, ...] = ()
    source: str | None = None  # `from`: another model's name
    file: Path | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # Settings field -> parsed value
    sampling: Mapping[str, Any] = field(default_factory=dict)
    keep_alive: float | None | str = "default"  # "default": the server's KEEP_ALIVE
    pinned: bool | None = None  # None: only the default model is

    def apply(self, settings: Settings) -> Settings:
        return replace(settings, **self.settings) if self.settings else settings


def load_presets(path: Path | None, base: Settings, check_sampling: SamplingCheck | None = None) -> dict[str, Preset]:
    """Presets by model name from `path` (none when it is None or missing)."""
    if path is None or not path.is_file():
        return {}
    where = f"presets file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{where}: {exc}") from None
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise SettingsError(f"{where}: unknown table '{unknown[0]}' (presets go under [models.NAME])")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise SettingsError(f"{where}: 'models' must be a table of [models.NAME] tables")
    presets = {}
    for name, table in models.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{where}: model '{name}': must be a table of keys")
        presets[name] = _preset(name, table, path, base, check_sampling)
    return presets


def _preset(name: str, table: dict[str, Any], path: Path, base: Settings, check: SamplingCheck | None) -> Preset:
    def bad(key: str, problem: str) -> SettingsError:
        return SettingsError(f"presets file {path}: model '{name}': key '{key}': {problem}")

    by_name = {f.name: f for f in fields(Settings)}
    settings: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in table.items():
        if key in PRESET_SETTINGS:
            settings[key] = _setting(by_name[key], value, path.parent, bad)
        elif key in SAMPLING_KEYS:
            problem = check(key, value) if check else None
            if problem:
                raise bad(key, problem)
            sampling[key] = value
        elif key in OWN_KEYS:
            own[key] = value
        else:
            raise bad(key, f"unknown key; a preset may set {', '.join(OWN_KEYS + PRESET_SETTINGS + SAMPLING_KEYS)}")
    try:
        replace(base, **settings)  # the checks across settings (e.g. a quantized KV cache needs flash attention)
    except SettingsError as exc:
        raise bad(next(iter(settings)), str(exc)) from None
    return Preset(name, settings=settings, sampling=sampling, **_own(own, path.parent, bad))


def _setting(f: Any, value: Any, folder: Path, bad: Callable[[str, str], SettingsError]) -> Any:
    if isinstance(value, (dict, list)) or value is None:
        raise bad(f.name, "must be a string, number or boolean")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if f.name in PATH_SETTINGS and text:
        text = str((folder / Path(text).expanduser()).resolve())
    try:
        parsed = f.metadata["parse"](text.strip())
    except ValueError as exc:
        raise bad(f.name, str(exc)) from None
    check = f.metadata["check"]
    problem = check(parsed) if check else None
    if problem:
        raise bad(f.name, problem)
    return parsed


def _own(own: dict[str, Any], folder: Path, bad: Callable[[str, str], SettingsError]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    aliases = own.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise bad("aliases", "must be a list of names")
    out["aliases"] = tuple(aliases)
    if "from" in own and "file" in own:
        raise bad("from", "a preset takes its weights from another model or from a file, not both")
    if "from" in own:
        if not isinstance(own["from"], str) or not own["from"].strip():
            raise bad("from", "must name a model")
        out["source"] = own["from"]
    if "file" in own:
        if not isinstance(own["file"], str) or not own["file"].strip():
            raise bad("file", "must be a path to a GGUF file")
        out["file"] = (folder / Path(own["file"]).expanduser()).resolve()
        if not out["file"].is_file():
            raise bad("file", f"no such file: {out['file']}")
    if "keep_alive" in own:
        try:
            out["keep_alive"] = parse_duration(own["keep_alive"])
        except ValueError as exc:
            raise bad("keep_alive", str(exc)) from None
    if "pinned" in own:
        if not isinstance(own["pinned"], bool):
            raise bad("pinned", "must be true or false")
        out["pinned"] = own["pinned"]
    return out
