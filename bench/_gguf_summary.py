"""Summarize a GGUF file (metadata values, tensor names/shapes/types, data hashes) and compare two.

A summary is small JSON, so each big output can be summarized right after the step
that wrote it and then deleted, and the byte-identity verdict needs neither file
at the end. Run as a script: `python bench/_gguf_summary.py FILE.gguf OUT.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

# Keys derived from the checkpoint's directory name or a model card: two converters
# may legitimately name the model differently. Differences are still reported.
NAME_KEYS = {
    "general.name",
    "general.basename",
    "general.finetune",
    "general.size_label",
    "general.version",
    "general.organization",
}
# Values longer than this (token lists, scores) are stored as a hash, not inline.
INLINE_LIMIT = 16


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _field_summary(field) -> dict:
    value = _jsonable(field.contents())
    types = [t.name for t in field.types]
    if isinstance(value, list) and len(value) > INLINE_LIMIT:
        blob = json.dumps(value, ensure_ascii=False).encode()
        return {"types": types, "len": len(value), "sha256": hashlib.sha256(blob).hexdigest()}
    return {"types": types, "value": value}


def summarize(path: Path) -> dict:
    import gguf  # imported here so comparing summaries needs no gguf

    reader = gguf.GGUFReader(path)
    tensors = []
    for t in reader.tensors:
        tensors.append(
            {
                "name": t.name,
                "shape": [int(d) for d in t.shape],
                "type": t.tensor_type.name,
                "n_bytes": int(t.n_bytes),
                "sha256": hashlib.sha256(memoryview(t.data).cast("B")).hexdigest(),
            }
        )
    return {
        "file": str(path),
        "file_bytes": os.path.getsize(path),
        "metadata": {k: _field_summary(f) for k, f in reader.fields.items()},
        "tensors": tensors,
        "tensor_types": dict(Counter(t["type"] for t in tensors)),
    }


def _tensor_diffs(ours: list[dict], ref: list[dict]) -> list[dict]:
    a = {t["name"]: t for t in ours}
    b = {t["name"]: t for t in ref}
    diffs = [{"tensor": n, "only_in": "ours"} for n in sorted(a.keys() - b.keys())]
    diffs += [{"tensor": n, "only_in": "llama.cpp"} for n in sorted(b.keys() - a.keys())]
    for name in sorted(a.keys() & b.keys()):
        fields = [k for k in ("shape", "type", "n_bytes", "sha256") if a[name][k] != b[name][k]]
        if fields:
            diffs.append(
                {
                    "tensor": name,
                    "differs_in": fields,
                    "ours": {k: a[name][k] for k in fields},
                    "llama.cpp": {k: b[name][k] for k in fields},
                }
            )
    return diffs


def compare(ours: dict, ref: dict) -> dict:
    """The verdict: tensors must match exactly; metadata may differ only in name keys."""
    tdiffs = _tensor_diffs(ours["tensors"], ref["tensors"])
    ma, mb = ours["metadata"], ref["metadata"]
    mdiffs = []
    for key in sorted(ma.keys() | mb.keys()):
        if ma.get(key) != mb.get(key):
            mdiffs.append({"key": key, "name_key": key in NAME_KEYS, "ours": ma.get(key), "llama.cpp": mb.get(key)})
    # kv_count counts name keys too, so a naming difference can shift it.
    naming_only = all(d["name_key"] or d["key"] == "GGUF.kv_count" for d in mdiffs)
    same_order = [t["name"] for t in ours["tensors"]] == [t["name"] for t in ref["tensors"]]
    return {
        "tensors_compared": len(ours["tensors"]),
        "tensors_identical": not tdiffs,
        "tensor_order_identical": same_order,
        "metadata_identical": not mdiffs,
        "metadata_identical_except_names": naming_only,
        "verdict": "PASS" if not tdiffs and naming_only else "FAIL",
        "tensor_differences": tdiffs[:50],
        "tensor_difference_count": len(tdiffs),
        "metadata_differences": mdiffs,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _gguf_summary.py FILE.gguf OUT.json", file=sys.stderr)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(summarize(src), indent=1))
    os.replace(partial, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
