"""Which models the library has: GGUF files under MODELS_DIR, in the Hugging Face cache, and presets.

A model is named by its file's stem (a split model by its first shard's stem without
`-00001-of-0000N`); a pulled one also answers to its pull reference (`hf.co/USER/REPO:QUANT`,
`USER/REPO/FILE.gguf`). The presets file adds aliases and settings, and new names over
the same weights (`from`) or over a file elsewhere (`file`). The folders are listed again
on every lookup that misses and every listing, so a pulled or copied model is there at
once; nothing a request names is ever opened as a path: names are looked up in the
table built from what is on disk.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from server.errors import ModelNotFound
from server.library.names import key, nearest, pull_ref
from server.library.presets import Preset, SamplingCheck, load_presets
from server.settings import Settings, SettingsError

log = logging.getLogger("server")
_SHARD = re.compile(r"^(.*)-(\d{5})-of-(\d{5})$")
# Quantization names as they appear in GGUF file names (the tag of an hf.co reference).
QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_[A-Z0-9_]+|Q\d_\d|Q\d_K|F16|BF16|F32|MXFP4(?:_MOE)?|TQ\d_\d)(?![A-Za-z0-9])", re.I
)


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    source: str  # "setting", "models_dir", "cache" or "preset"
    aliases: tuple[str, ...] = ()
    preset: Preset = field(default_factory=lambda: Preset(""))
    repo: str | None = None  # USER/REPO of a model in the Hugging Face cache

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def hub_cache() -> Path:
    """The Hugging Face cache folder, as huggingface-hub resolves it (HF_HUB_CACHE, HF_HOME, ...)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def quant_of(filename: str) -> str | None:
    match = QUANT_IN_NAME.search(Path(filename).stem)
    return match.group(1).upper() if match else None


class Catalog:
    """The library's models by name; `models_dir` and `presets_file` from the settings."""

    def __init__(
        self,
        settings: Settings,
        models_dir: Path,
        cache: Path | None = None,
        check_sampling: SamplingCheck | None = None,
        default_file: Callable[[], Path] | None = None,
    ) -> None:
        self.settings, self.models_dir = settings, models_dir
        self.cache = cache if cache is not None else hub_cache()
        self.presets_file = Path(settings.models_presets) if settings.models_presets else models_dir / "presets.toml"
        self._check_sampling = check_sampling
        self._default_file = default_file
        self.presets = load_presets(self.presets_file, settings, check_sampling)
        self._table: dict[str, Model] = {}
        self._models: list[Model] = []
        self.extras: list[Model] = []  # models served from elsewhere (an engine a caller built)
        self.scan()

    def reload_presets(self) -> None:
        """Read the presets file again (after /api/copy or /api/delete changed it)."""
        self.presets = load_presets(self.presets_file, self.settings, self._check_sampling)
        self.scan()

    def scan(self) -> list[Model]:
        """List the folders again; returns every model, in a stable order."""
        found: list[Model] = []
        taken: set[str] = set()

        def add(model: Model) -> None:
            if any(same_file(m.path, model.path) and m.source != "preset" for m in found) and model.source != "preset":
                return  # the same file seen twice (MODEL inside MODELS_DIR, say)
            if key(model.name) in taken and model.source == "cache" and model.aliases:
                # A pulled file whose stem another model has: named by its pull reference instead.
                model = Model(model.aliases[-1], model.path, model.source, model.aliases[:-1], repo=model.repo)
            if key(model.name) in taken:
                first = _first(found, model)
                log.warning("two models named %r: %s is served, %s is not", model.name, first, model.path)
                return
            taken.add(key(model.name))
            found.append(model)

        for extra in self.extras:
            add(extra)
        if self.settings.model:
            path = Path(self.settings.model).expanduser().resolve()
            add(Model(_stem(path), path, "setting"))
        for path in self._files(self.models_dir):
            add(Model(_stem(path), path, "models_dir"))
        for path, repo in self._cached():
            add(Model(_stem(path), path, "cache", _pull_names(repo, path), repo=repo))
        found = self._with_presets(found, add)
        table: dict[str, Model] = {}
        for model in found:
            for name in model.names:
                table.setdefault(key(name), model)
        self._table, self._models = table, found
        return found

    def _with_presets(self, found: list[Model], add: Callable[[Model], None]) -> list[Model]:
        by_key = {key(n): m for m in found for n in m.names}
        for name, preset in self.presets.items():
            target = by_key.get(key(name))
            if preset.file is not None:
                add(Model(name, preset.file, "preset", preset.aliases, preset))
            elif preset.source is not None:
                source = by_key.get(key(preset.source))
                if source is None:
                    log.warning("preset %r: its model %r is not in the library", name, preset.source)
                    continue
                add(Model(name, source.path, "preset", preset.aliases, preset, source.repo))
            elif target is not None:
                found[found.index(target)] = merged = Model(
                    target.name, target.path, target.source, target.aliases + preset.aliases, preset, target.repo
                )
                by_key.update({key(n): merged for n in merged.names})
            else:
                log.warning("preset %r names no model of the library (give it `from` or `file`)", name)
        return found

    def _files(self, folder: Path) -> Iterator[Path]:
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*.gguf")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
                continue
            shard = _SHARD.match(path.stem)
            if shard and shard.group(2) != "00001":
                continue  # llama.cpp loads every shard from the first
            yield path

    def _cached(self) -> Iterator[tuple[Path, str]]:
        """GGUF files of the cache's snapshots (the one refs/main names, when there is one)."""
        if not self.cache.is_dir():
            return
        for repo_dir in sorted(self.cache.glob("models--*--*")):
            repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
            snapshots = repo_dir / "snapshots"
            ref = repo_dir / "refs" / "main"
            main = ref.read_text().strip() if ref.is_file() else None
            folders = [snapshots / main] if main and (snapshots / main).is_dir() else sorted(snapshots.glob("*"))
            for folder in folders:
                for path in self._files(folder):
                    yield path, repo

    def models(self) -> list[Model]:
        return self.scan()

    def find(self, name: str) -> Model:
        """The model `name` names (a name, an alias, a pull reference); ModelNotFound (404) naming
        what there is, closest first, when none does."""
        model = self._lookup(name)
        if model is None:
            self.scan()  # a file added, pulled or copied since the last look
            model = self._lookup(name)
        if model is None:
            names = [m.name for m in self._models]
            listed = ", ".join(nearest(name, names)) or "none"
            raise ModelNotFound(f"model '{name}' not found; available: {listed}")
        return model

    def _lookup(self, name: str) -> Model | None:
        model = self._table.get(key(name))
        if model is None and (ref := pull_ref(name)) is not None:
            model = self._table.get(key(ref.canonical))
        return model

    def default(self) -> Model:
        """DEFAULT_MODEL, else MODEL, else Llama 2 if made, else the embedded SmolLM2 (fetched once)."""
        if self.settings.default_model:
            try:
                return self.find(self.settings.default_model)
            except ModelNotFound as exc:
                raise SettingsError(f"LLAMA_SERVER_DEFAULT_MODEL: {exc.message}") from None
        for model in self._models:
            if model.source == "setting":
                return model
        from server.model.files import LLAMA2_FILE

        for model in self._models:
            if model.path.name == LLAMA2_FILE:
                return model
        if self._default_file is None:
            raise SettingsError("no default model: set LLAMA_SERVER_DEFAULT_MODEL")
        path = self._default_file()
        self.scan()
        return next(m for m in self._models if m.path == path.resolve() or m.path == path)


def _stem(path: Path) -> str:
    stem = path.name.removesuffix(".gguf")
    shard = _SHARD.match(stem)
    return shard.group(1) if shard else stem


def _pull_names(repo: str, path: Path) -> tuple[str, ...]:
    names = [f"{repo}/{path.name}"]
    quant = quant_of(path.name)
    if quant:
        names.append(f"hf.co/{repo}:{quant}")
    return tuple(names)


def _first(found: list[Model], model: Model) -> Path:
    return next(m.path for m in found if key(m.name) == key(model.name))


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
