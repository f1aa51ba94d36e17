"""`python -m server pull REF [--force]` (and `make pull MODEL=REF`): pull a model with a progress bar.

REF is `hf.co/USER/REPO[:QUANT]` or `USER/REPO/FILE.gguf`. The model lands in the Hugging
Face cache, where a running server finds it at once. Exit codes: 0 done, 2 a bad
reference or setting, 1 the pull failed (the message says why).
"""

from __future__ import annotations

import argparse
import sys

from server.errors import ServerError
from server.library.names import pull_ref
from server.library.pull import Progress, pull_model
from server.settings import Settings, SettingsError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m server pull", description="Pull a GGUF model from Hugging Face.")
    parser.add_argument("model", help="hf.co/USER/REPO[:QUANT] (default quant Q4_K_M) or USER/REPO/FILE.gguf")
    parser.add_argument("--force", action="store_true", help="pull even if a model of that name exists")
    args = parser.parse_args(argv)
    ref = pull_ref(args.model)
    if ref is None:
        sys.stderr.write(f"laptop-llama: {args.model!r} is not hf.co/USER/REPO[:QUANT] or USER/REPO/FILE.gguf\n")
        return 2
    try:
        from server.http.app import build_catalog

        catalog = build_catalog(Settings.from_env())
    except SettingsError as exc:
        sys.stderr.write(f"laptop-llama: cannot pull: {exc}\n")
        return 2
    bar = Bar()
    try:
        name = pull_model(ref, catalog, bar.show, force=args.force)
    except ServerError as exc:
        bar.close()
        sys.stderr.write(f"laptop-llama: {exc.message}\n")
        return 1
    bar.close()
    print(f"pulled {args.model}: served as '{name}'")
    return 0


class Bar:
    """Progress as a tqdm bar per file on a terminal, as plain lines in a log (tqdm decides)."""

    def __init__(self) -> None:
        self._bar = None
        self._status = ""

    def show(self, progress: Progress) -> None:
        from tqdm import tqdm

        if progress.total is None:
            self.close()
            if progress.status != "success":
                print(progress.status, file=sys.stderr)
            return
        if progress.status != self._status:
            self.close()
            self._status = progress.status
            self._bar = tqdm(total=progress.total, unit="B", unit_scale=True, desc=progress.status, mininterval=1.0)
        bar = self._bar
        if bar is not None and progress.completed is not None:
            bar.update(progress.completed - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._status = None, ""
