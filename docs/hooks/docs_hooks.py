"""MkDocs hooks (mkdocs.yml): reference tables made from the code, and the results files.

- A page holding the line `<!-- settings-table -->` gets there a table of every field of the
  Settings dataclass (variable, flag, default, meaning), read at build time, so the page cannot
  drift from the code. settings.py is loaded by its path: it imports only the standard library,
  and loading the `server` package would load llama.cpp.
- `<!-- respond-fields-table -->` becomes the table of /api/respond's fields: the dialect's field
  list (server/http/respond_schema.py) with the shared limits (server/http/fields.py) and its
  defaults (server/http/defaults.py).
- `<!-- sampling-defaults-table -->` becomes the table of every dialect's sampling defaults
  (server/http/defaults.py), one column per dialect.
- Pages cite measured figures with links to bench/results/*.json, written relative to the page in
  the repository (`../bench/results/x.json`, right when read on a forge). Those files are published
  with the site under bench/results/ and the links are rewritten to point there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "bench/results"
TABLE_MARKER = "<!-- settings-table -->"
FIELDS_MARKER = "<!-- respond-fields-table -->"
DEFAULTS_MARKER = "<!-- sampling-defaults-table -->"


def load_settings_module():
    name = "_laptop_llama_settings"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "server" / "settings.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses looks its module up while building the class
        spec.loader.exec_module(module)
    return sys.modules[name]


def show_default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return "computed at start"
    value = f.default
    if value is None or value == () or value == "":
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def settings_table() -> str:
    settings = load_settings_module()
    rows = ["| `LLAMA_SERVER_...` | flag | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(settings.Settings):
        variable = settings.env_name(f.name).removeprefix(settings.ENV_PREFIX)
        meaning = f.metadata["help"].replace("|", "\\|")
        anchor = f.name.replace("_", "-")
        flag = "--" + anchor
        rows.append(f'| <a id="{anchor}"></a>`{variable}` | `{flag}` | {show_default(f)} | {meaning} |')
    return "\n".join(rows)


def respond_fields_table() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from server.http import fields, respond_schema

    kinds = {int: "integer", float: "number", str: "string", list: "array", dict: "object", bool: "boolean"}
    # Defaults the dialect fills in itself rather than from the shared table.
    own = {"max_tokens": "`MAX_TOKENS`", "stream": "`false`", "history": "`[]`", "system": "`SYSTEM_PROMPT`"}
    rows = ["| field | type | limits | default |", "|---|---|---|---|"]
    for name in respond_schema.FIELDS:
        limit = fields.LIMITS[name]
        types = limit.kind if isinstance(limit.kind, tuple) else (limit.kind,)
        type_text = " or ".join(kinds[t] for t in types if not (t is int and float in types))
        rows.append(f"| `{name}` | {type_text} | {limits_text(name, limit, types)} | {default_text(name, own)} |")
    return "\n".join(rows)


def limits_text(name: str, limit, types: tuple) -> str:
    prefix = "required; " if limit.required else ""
    high = "`MAX_TOKENS_CEILING`" if name == "max_tokens" else limit.high
    if str in types and len(types) == 1:
        text = f"{limit.low}-{high} characters" if limit.low is not None else ""
    elif list in types or dict in types:
        text = f"at most {high} {'items' if list in types else 'entries'}" if high is not None else ""
    elif limit.low is not None:
        text = f"{limit.low} to {high}"
    else:
        text = ""
    return (prefix + text).strip("; ") or "–"


def default_text(name: str, own: dict) -> str:
    from server.http import defaults

    if name in own:
        return own[name]
    if name not in defaults.RESPOND:
        return "–"
    value = defaults.RESPOND[name]
    if value is None:
        return "none"
    return "`" + json.dumps(value) + "`"


def sampling_defaults_table() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from server.http import defaults

    dialects = list(defaults.DIALECTS)
    head = " | ".join(f"{defaults.ROUTES[d]} ({defaults.ANCHORS[d]})" for d in dialects)
    rows = [f"| field | {head} |", "|---|" + "---|" * len(dialects)]
    for name in defaults.SHOWN:
        values = [defaults.DIALECTS[d][name] for d in dialects]
        cells = ["random" if v is None else f"`{json.dumps(v)}`" for v in values]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def on_files(files: Files, config) -> Files:
    for path in sorted((ROOT / RESULTS).iterdir()):
        if path.is_file():
            files.append(File(f"{RESULTS}/{path.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if TABLE_MARKER in markdown:
        markdown = markdown.replace(TABLE_MARKER, settings_table())
    if FIELDS_MARKER in markdown:
        markdown = markdown.replace(FIELDS_MARKER, respond_fields_table())
    if DEFAULTS_MARKER in markdown:
        markdown = markdown.replace(DEFAULTS_MARKER, sampling_defaults_table())
    # Pages sit at the top of docs/, so ../bench/results/ in the repository is bench/results/ in the site.
    return markdown.replace(f"](../{RESULTS}/", f"]({RESULTS}/")
