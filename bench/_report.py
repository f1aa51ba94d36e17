"""Turn the conversion benchmark's measurements into medians, ratios, a table and a JSON file."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from _gguf_summary import compare

GB = 1e9
# The issue's targets, as ratios of ours to llama.cpp's converter.
RSS_RATIO_TARGET = 0.5
WALL_RATIO_TARGET = 1.0


def step_medians(runs: list[dict]) -> dict[str, dict]:
    """Group the runs by step name; median wall time, peak RSS and CPU time of each."""
    by_step: dict[str, list[dict]] = {}
    for run in runs:
        by_step.setdefault(run["name"], []).append(run)
    out = {}
    for name, rs in by_step.items():
        ok = [r for r in rs if r["returncode"] == 0]
        out[name] = {
            "runs": len(rs),
            "failed_runs": len(rs) - len(ok),
            "wall_s_median": statistics.median(r["wall_s"] for r in ok) if ok else None,
            "peak_rss_bytes_median": int(statistics.median(r["peak_rss_bytes"] for r in ok)) if ok else None,
            "cpu_s_median": statistics.median(r["cpu_s"] for r in ok) if ok else None,
        }
    return out


def ratios(medians: dict[str, dict]) -> dict | None:
    """Ours over llama.cpp's for the f16 conversion, with pass/fail against the targets."""
    ours, ref = medians.get("ours_convert_f16"), medians.get("llamacpp_convert_f16")
    if not ours or not ref or ours["wall_s_median"] is None or ref["wall_s_median"] is None:
        return None
    wall = ours["wall_s_median"] / ref["wall_s_median"]
    rss = ours["peak_rss_bytes_median"] / ref["peak_rss_bytes_median"]
    return {
        "wall_ours_over_llamacpp": round(wall, 3),
        "wall_target": WALL_RATIO_TARGET,
        "wall_meets_target": wall <= WALL_RATIO_TARGET,
        "peak_rss_ours_over_llamacpp": round(rss, 3),
        "peak_rss_target": RSS_RATIO_TARGET,
        "peak_rss_meets_target": rss <= RSS_RATIO_TARGET,
    }


def _fmt(value, scale=1.0, digits=1) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def table(medians: dict[str, dict], sizes: dict[str, int], rat: dict | None, identity: dict | None) -> str:
    lines = [f"{'step':<24} {'runs':>4} {'wall s':>8} {'cpu s':>8} {'peak RSS GB':>12} {'output GB':>10}", "-" * 70]
    for name, m in medians.items():
        lines.append(
            f"{name:<24} {m['runs']:>4} {_fmt(m['wall_s_median']):>8} "
            f"{_fmt(m['cpu_s_median']):>8} {_fmt(m['peak_rss_bytes_median'], GB, 3):>12} "
            f"{_fmt(sizes.get(name), GB, 3):>10}"
        )
    if rat:
        lines.append(
            f"ours/llama.cpp f16 convert: wall {rat['wall_ours_over_llamacpp']:.2f}x "
            f"(target <= {WALL_RATIO_TARGET}: {'met' if rat['wall_meets_target'] else 'NOT met'}), "
            f"peak RSS {rat['peak_rss_ours_over_llamacpp']:.2f}x "
            f"(target <= {RSS_RATIO_TARGET}: {'met' if rat['peak_rss_meets_target'] else 'NOT met'})"
        )
    if identity:
        lines.append(
            f"f16 outputs, tensor by tensor: {identity['verdict']} "
            f"({identity['tensors_compared']} tensors, identical={identity['tensors_identical']}, "
            f"metadata identical={identity['metadata_identical']}, "
            f"except names={identity['metadata_identical_except_names']})"
        )
        for d in identity["metadata_differences"]:
            lines.append(f"  metadata {d['key']}: ours={d['ours']} llama.cpp={d['llama.cpp']}")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    """Write to a temporary name and rename, so a crash never leaves half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def results_document(command: str, preset: str, ckpt: dict, context: dict, measured: dict) -> dict:
    """Everything the results file holds: medians, ratios, sizes, the identity verdict, raw runs."""
    medians = step_medians(measured["runs"])
    sums = measured["summaries"]
    return {
        "benchmark": "conversion",
        "command": command,
        "preset": preset,
        "checkpoint": ckpt,
        **context,
        "page_cache": {
            "method": "before every conversion: sync, then read all checkpoint shards once, "
            "so each converter starts from the same warm cache; the order of the sides "
            "alternates between rounds",
            "orders": measured["orders"],
            "warm_cache_s": measured["warm_cache_s"],
        },
        "medians": medians,
        "ratios": ratios(medians),
        "file_bytes": measured["sizes"],
        "quantized_tensor_types": sums.get("quantized", {}).get("tensor_types"),
        "byte_identity": compare(sums["ours"], sums["ref"]) if {"ours", "ref"} <= sums.keys() else None,
        "runs": measured["runs"],
    }
