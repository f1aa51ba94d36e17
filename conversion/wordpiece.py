"""A BERT WordPiece vocabulary, read without transformers, and the name of its pre-tokenizer.

Tokens come from tokenizer.json (`model.vocab`) or, where a checkpoint has only that,
vocab.txt (one token a line, the id is the line number). llama.cpp's converter names the
pre-tokenizer by hashing the ids that the Hugging Face tokenizer gives for a fixed check
text; an unknown hash stops the conversion. To give the same name without that tokenizer,
`encode` reimplements the BERT pipeline that check text goes through (BertNormalizer,
BertPreTokenizer, greedy longest-match WordPiece, [CLS] ... [SEP]). It does not split on
added tokens inside the text, which the check text never contains.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from conversion.checkpoint import load_json
from conversion.errors import ConversionError

# convert_hf_to_gguf.py's check text (get_vocab_base_pre), character for character.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(ids of CHECK_TEXT) -> tokenizer.ggml.pre, for the WordPiece vocabularies that
# llama.cpp's converter knows (where it lists a hash twice, its last name wins, as there).
KNOWN_PRE = {
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",  # bert-base-uncased vocab
    "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7": "bert-bge-large",
    "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448": "jina-v1-en",
}
# tokenizers' BertNormalizer: CJK ideographs get spaces around them.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Rust's char::is_whitespace (the Unicode White_Space property)
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    map(chr, range(0x2000, 0x200B))
)


@dataclass(frozen=True)
class Normalizer:
    clean_text: bool = True
    chinese_chars: bool = True
    strip_accents: bool | None = None  # None: strip when lowercasing, as BertNormalizer does
    lowercase: bool = True

    def __call__(self, text: str) -> str:
        if self.clean_text:
            text = "".join(" " if c in WHITESPACE else c for c in text if not is_control(c))
        if self.chinese_chars:
            text = "".join(f" {c} " if is_cjk(c) else c for c in text)
        if self.lowercase if self.strip_accents is None else self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = "".join(c.lower() for c in text)  # per character, as Rust's char::to_lowercase
        return text


def is_control(c: str) -> bool:
    return c not in "\t\n\r" and (c in "\x00\ufffd" or unicodedata.category(c).startswith("C"))


def is_cjk(c: str) -> bool:
    return any(lo <= ord(c) <= hi for lo, hi in CJK_RANGES)


def is_punctuation(c: str) -> bool:
    return (c.isascii() and not c.isalnum() and c.isprintable() and c != " ") or unicodedata.category(c).startswith("P")


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: split on whitespace, and every punctuation character is a word."""
    words: list[str] = []
    for chunk in "".join(" " if c in WHITESPACE else c for c in text).split(" "):
        word = ""
        for c in chunk:
            if is_punctuation(c):
                words += [word, c] if word else [c]
                word = ""
            else:
                word += c
        if word:
            words.append(word)
    return words


@dataclass(frozen=True)
class WordPiece:
    """The vocabulary (token -> id) and what a BERT tokenizer does around it."""

    vocab: dict[str, int]
    normalizer: Normalizer
    unk: str = "[UNK]"
    prefix: str = "##"
    max_chars: int = 100
    cls: str = "[CLS]"
    sep: str = "[SEP]"

    def word_ids(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.vocab[self.unk]]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.vocab[self.unk]]
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [i for word in pre_tokenize(self.normalizer(text)) for i in self.word_ids(word)]
        return [self.vocab[self.cls], *ids, self.vocab[self.sep]]

    def pre_name(self) -> str:
        digest = hashlib.sha256(str(self.encode(CHECK_TEXT)).encode()).hexdigest()
        if digest not in KNOWN_PRE:
            raise ConversionError(
                f"This WordPiece tokenizer is not one llama.cpp knows (check-text hash {digest}); "
                "llama.cpp's converter refuses it too."
            )
        return KNOWN_PRE[digest]


def load_wordpiece(hf_dir: Path) -> WordPiece:
    """From tokenizer.json, else vocab.txt; tokenizer_config.json settings win, as in BertTokenizerFast."""
    config_path = hf_dir / "tokenizer_config.json"
    config = load_json(config_path) if config_path.is_file() else {}
    tokenizer_path = hf_dir / "tokenizer.json"
    if tokenizer_path.is_file():
        tokenizer = load_json(tokenizer_path)
        model = tokenizer.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise ConversionError(f"{tokenizer_path} is not a WordPiece tokenizer; BERT checkpoints need one.")
        vocab = dict(model["vocab"])
        for added in tokenizer.get("added_tokens") or []:
            vocab.setdefault(added["content"], added["id"])
        norm = tokenizer.get("normalizer") or {}
        unk, prefix = model.get("unk_token", "[UNK]"), model.get("continuing_subword_prefix", "##")
        max_chars = model.get("max_input_chars_per_word", 100)
    elif (hf_dir / "vocab.txt").is_file():
        with open(hf_dir / "vocab.txt", encoding="utf-8") as f:  # as transformers' load_vocab reads it
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f.readlines())}
        norm, unk, prefix, max_chars = {}, "[UNK]", "##", 100
    else:
        raise ConversionError(f"Neither tokenizer.json nor vocab.txt is in {hf_dir}; a BERT checkpoint needs one.")
    normalizer = Normalizer(
        clean_text=norm.get("clean_text", True),
        chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    specials = {k: config.get(f"{k}_token", f"[{k.upper()}]") for k in ("unk", "cls", "sep")}
    return WordPiece(
        vocab,
        normalizer,
        specials["unk"] if "unk_token" in config else unk,
        prefix,
        max_chars,
        specials["cls"],
        specials["sep"],
    )
