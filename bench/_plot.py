"""Plot a concurrency results file: median tokens/s against clients, one line per server, min-max bars.

Runs in the llama-cpp-python reference venv, which has matplotlib (the project's own venv does not):

    bench/.work/llama-cpp-python-<pin>-venv/bin/python bench/_plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def plot(json_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(json_path.read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["server"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["server"] == name]
        x = [r["clients"] for r in rows]
        y = [r["tokens_per_s"] for r in rows]
        # Older files have medians only; newer ones the min/max of the rounds too.
        lo = [r["tokens_per_s"] - r.get("tokens_per_s_spread", {}).get("min", r["tokens_per_s"]) for r in rows]
        hi = [r.get("tokens_per_s_spread", {}).get("max", r["tokens_per_s"]) - r["tokens_per_s"] for r in rows]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=name)
    rounds = doc["settings"]["rounds"]
    ax.set(
        xlabel="concurrent clients",
        ylabel=f"aggregate tokens/s (median, min-max of {rounds} rounds)",
        xscale="log",
        title=f"{doc['model']} - {doc['settings']['parallel']} slots, {doc['host']['cpus']} CPUs",
    )
    ax.set_xticks(doc["settings"]["clients"], [str(c) for c in doc["settings"]["clients"]])
    ax.minorticks_off()  # a log axis would also label 2x10^0 and so on between the client counts
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, png_path)


if __name__ == "__main__":
    plot(Path(sys.argv[1]), Path(sys.argv[2]))
