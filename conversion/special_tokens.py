"""Special token ids, add_*_token flags and normalizer flags, as llama.cpp's gguf-py writes them.

The GGUF keys come out as gguf.SpecialVocab writes them in the gguf-py that the pinned
llama.cpp vendors. That version is newer than the gguf package on PyPI that this project
installs: it also writes tokenizer.ggml.normalizer.* and reads TemplateProcessing a little
differently. So BERT checkpoints go through this port of its logic (merges left out:
WordPiece has none). Sources, in its order: tokenizer.json (normalizer, added tokens,
post-processor), tokenizer_config.json (token names, add_* flags), then config.json (*_token_id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from conversion.errors import ConversionError

# Keys of the vendored gguf-py that the installed gguf package does not name yet.
LOWERCASE_KEY = "tokenizer.ggml.normalizer.lowercase"
STRIP_ACCENTS_KEY = "tokenizer.ggml.normalizer.strip_accents"
TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclass
class SpecialTokens:
    ids: dict[str, int] = field(default_factory=dict)
    add: dict[str, bool] = field(default_factory=dict)
    types: tuple[str, ...] = TYPES
    chat_template: str | list | None = None
    lowercase: bool | None = None
    strip_accents: bool | None = None

    def set_id(self, kind: str, token_id, n_vocab: int) -> None:
        if not isinstance(token_id, int):
            return
        if token_id < 0:
            raise ConversionError(f"invalid value for special token type {kind}: {token_id}")
        if token_id < n_vocab:
            self.ids.setdefault(kind, token_id)

    def add_to_gguf(self, writer: gguf.GGUFWriter) -> None:
        for kind, token_id in self.ids.items():
            if (setter := getattr(writer, f"add_{kind}_token_id", None)) is not None:  # cls has none
                setter(token_id)
        for kind, value in self.add.items():
            if (setter := getattr(writer, f"add_add_{kind}_token", None)) is not None:
                setter(value)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)
        if self.lowercase is not None:
            writer.add_bool(LOWERCASE_KEY, self.lowercase)
        if self.strip_accents is not None:
            writer.add_bool(STRIP_ACCENTS_KEY, self.strip_accents)

    def parse_normalizer(self, normalizer: dict) -> None:
        kind = normalizer.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            if "lowercase" in normalizer:
                self.lowercase = normalizer["lowercase"]
            if "strip_accents" in normalizer:
                self.strip_accents = normalizer["strip_accents"]
        elif kind == "Sequence":
            for inner in normalizer.get("normalizers", []):
                self.parse_normalizer(inner)


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def special_tokens(hf_dir: Path, n_vocab: int) -> SpecialTokens:
    st = SpecialTokens()
    tokenizer = read_json(hf_dir / "tokenizer.json")
    config = read_json(hf_dir / "tokenizer_config.json")
    added = []
    if tokenizer:
        if normalizer := tokenizer.get("normalizer"):
            st.parse_normalizer(normalizer)
        added = tokenizer.get("added_tokens", {})
        names = {k: (config or {}).get(f"{k}_token") for k in ("bos", "cls", "eos", "sep")}
        if not names["bos"] and names["cls"] and config:
            config["bos_token"] = names["bos"] = names["cls"]
        if not names["eos"] and names["sep"] and config:
            config["eos_token"] = names["eos"] = names["sep"]
        if post := tokenizer.get("post_processor"):
            for processor in post.get("processors", [post]):
                read_processor(st, processor, names, config)
    if config:
        read_tokenizer_config(st, hf_dir, config, added, n_vocab)
    model_config = read_json(hf_dir / "config.json")
    if model_config is not None:
        for kind in st.types:
            token_id = model_config.get(f"{kind}_token_id")
            if token_id is None and "text_config" in model_config:
                token_id = model_config["text_config"].get(f"{kind}_token_id")
            st.set_id(kind, token_id, n_vocab)
    return st


def read_processor(st: SpecialTokens, processor: dict, names: dict, config: dict | None) -> None:
    kind = processor.get("type")
    if kind == "ByteLevel":
        st.add.setdefault("bos", False)
        st.add.setdefault("eos", False)
    elif kind == "RobertaProcessing":
        st.add.update(bos=True, eos=True, sep=True)
        if not names["cls"] and config:
            config["cls_token"] = names["cls"] = processor.get("cls", [names["bos"]])[0]
        if not names["sep"] and config:
            config["sep_token"] = names["sep"] = processor.get("sep", [names["eos"]])[0]
    elif kind == "TemplateProcessing":
        first, last = read_single_template(st, processor.get("single", []), names, config)
        read_pair_template(st, processor.get("pair", []), first, last, names, config)


def special_id(item: dict):
    return item.get("SpecialToken", {}).get("id")


def read_single_template(st: SpecialTokens, single: list, names: dict, config: dict | None):
    """Whether a lone sequence starts with BOS/CLS and ends with EOS (the crude parse gguf-py does)."""
    first = last = None
    if len(single) <= 1:
        return first, last
    if first := special_id(single[0]):
        if not config:
            names["bos"] = first
        elif first not in (names["bos"], names["cls"]):
            if not names["bos"]:
                config["bos_token"] = names["bos"] = first
            if not names["cls"]:
                config["cls_token"] = names["cls"] = first
        st.add["bos"] = first in (names["bos"], names["cls"])
    if last := special_id(single[-1]):
        if not config:
            names["eos"] = last
        elif last != names["eos"]:
            if "eot" not in st.types:
                st.types += ("eot",)
                config["eot_token"] = names["eos"]
            elif "eom" not in st.types:
                st.types += ("eom",)
                config["eom_token"] = names["eos"]
            config["eos_token"] = names["eos"] = last
        st.add["eos"] = last == names["eos"]
    return first, last


def read_pair_template(st: SpecialTokens, pair: list, first, last, names: dict, config: dict | None) -> None:
    """Whether a separator goes between two sequences: A [SEP] B."""
    if not pair:
        return
    start = 1 if first and special_id(pair[0]) == first else 0
    stop = -1 if last and special_id(pair[-1]) == last else None
    pair = pair[start:stop]
    if not pair:
        return
    seq_a, seq_b = pair[0].get("Sequence", {}).get("id"), pair[-1].get("Sequence", {}).get("id")
    if not (seq_a == "A" and seq_b == "B" and (middle := pair[1:-1])):
        return
    separators = (names["sep"], names["eos"])
    add_sep = False
    if (entry := special_id(middle[0])) and entry in separators and not last:
        add_sep = True
    if len(middle) == 2 and (entry := special_id(middle[1])) and entry in separators:
        add_sep = True
    st.add["sep"] = add_sep
    if add_sep and not names["sep"] and config:
        config["sep_token"] = names["eos"]


def read_tokenizer_config(st: SpecialTokens, hf_dir: Path, config: dict, added: list, n_vocab: int) -> None:
    template = config.get("chat_template", chat_template_file(hf_dir))
    if template is None or isinstance(template, (str, list)):
        st.chat_template = template
    for kind in st.types:
        flag = config.get(f"add_{kind}_token")
        if isinstance(flag, bool):
            st.add.setdefault(kind, flag)  # the post-processor's answer wins, as in gguf-py
        entry = config.get(f"{kind}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str):
            continue
        st.set_id(kind, next((a.get("id") for a in added if a.get("content") == content), None), n_vocab)


def chat_template_file(hf_dir: Path):
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        template: str | list = jinja.read_text(encoding="utf-8")
        if more := list((hf_dir / "additional_chat_templates").glob("*.jinja")):
            template = [{"name": "default", "template": template}]
            template += [{"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in more]
        return template
    data = read_json(hf_dir / "chat_template.json")
    return data.get("chat_template") if data else None
