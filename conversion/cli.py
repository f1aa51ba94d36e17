"""The conversion command line: download, convert, quantize, verify, all.

Subcommands are a table of (argument setup, runner); main() maps the domain
errors to a one-paragraph message and an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# verify and all load the model with llama.cpp, which must come before numpy and
# sentencepiece: with a CUDA build of llama-cpp-python a process that imported
# either of them first crashes (SIGSEGV) when it loads a model. The library
# functions don't need this; only this command line loads models in-process.
import llama_cpp  # noqa: F401  (import order, see above)

from conversion.errors import ConversionError


def add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo_id", help="Hugging Face repo id, e.g. meta-llama/Llama-2-7b-chat-hf")
    p.add_argument("--dest", type=Path, required=True, help="cache folder to download into")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")


def run_download(a: argparse.Namespace) -> str:
    import time

    from conversion.downloader import download
    from conversion.files import human_size

    started = time.monotonic()
    path = download(a.repo_id, a.dest, a.revision)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return f"download: {path}  {human_size(size)}  {time.monotonic() - started:.1f} s"


def add_convert(p: argparse.ArgumentParser) -> None:
    from conversion.plan import OUTTYPES

    p.add_argument("hf_dir", type=Path, help="Hugging Face checkpoint folder")
    p.add_argument("--out", type=Path, required=True, help="output .gguf path")
    p.add_argument("--outtype", "--type", dest="outtype", default="f16", choices=list(OUTTYPES))
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument(
        "--keep-pooler",
        action="store_true",
        help="BERT rerankers: keep the pooler so llama.cpp scores as transformers does "
        "(the file then differs from llama.cpp's converter's)",
    )


def run_convert(a: argparse.Namespace) -> str:
    from conversion.pipeline import convert_step

    return convert_step(a.hf_dir, a.out, a.outtype, a.force, keep_pooler=a.keep_pooler).summary("convert")


def add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf_in", type=Path, help="f16/f32 GGUF from `convert`")
    p.add_argument("--out", type=Path, required=True, help="output .gguf path")
    p.add_argument("--type", dest="qtype", default="Q4_K_M", help="Q4_K_M (default), Q4_0, Q5_K_M, Q8_0, ...")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def run_quantize(a: argparse.Namespace) -> str:
    from conversion.pipeline import quantize_step

    return quantize_step(a.gguf_in, a.out, a.qtype, a.threads, a.force).summary("quantize")


def add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", type=Path, help="GGUF file to load and try")


def run_verify(a: argparse.Namespace) -> str:
    from conversion.verifier import verify

    return "\n".join(verify(a.gguf).lines())


def add_all(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Hugging Face repo id or local checkpoint folder")
    p.add_argument("--out", type=Path, required=True, help="final .gguf path, e.g. models/NAME.gguf")
    p.add_argument("--type", dest="qtype", default="Q4_K_M")
    p.add_argument("--keep-f16", action="store_true", help="keep the intermediate f16 GGUF")
    p.add_argument("--dest", type=Path, default=None, help="download cache (default: the Hugging Face cache)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="redo steps whose outputs exist")


def run_all(a: argparse.Namespace) -> str:
    from conversion.pipeline import run_all as pipeline_all

    result = pipeline_all(a.source, a.out, a.qtype, a.keep_f16, a.force, a.dest, a.threads)
    return result.summary("all")


COMMANDS = {
    "download": (add_download, run_download, "download a checkpoint's files from the Hub"),
    "convert": (add_convert, run_convert, "Hugging Face checkpoint (Llama, BERT) -> GGUF"),
    "quantize": (add_quantize, run_quantize, "quantize a GGUF with llama.cpp"),
    "verify": (add_verify, run_verify, "load a GGUF and generate a few tokens (or embed, for encoders)"),
    "all": (add_all, run_all, "download, convert, quantize and verify"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conversion",
        description="Hugging Face checkpoint (Llama, BERT) -> quantized GGUF, step by step or all at once.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, (setup, runner, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        setup(sp)
        sp.set_defaults(run=runner)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(args.run(args), flush=True)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; partial outputs were removed, run again to resume", file=sys.stderr)
        return 130
    return 0
