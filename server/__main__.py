"""`python -m server [--flag VALUE ...]`: check the settings and the model file, then start gunicorn.
`python -m server pull REF`: pull a model from Hugging Face (server/pull_cli.py).

Every setting has a flag named after it (--n-ctx for LLAMA_SERVER_N_CTX, ...).
Flags win over the environment, which wins over the defaults: the flags are laid
over the LLAMA_SERVER_* variables and the result goes through Settings.from_env,
so values are parsed and checked by the one settings table. gunicorn's master and
its worker read the same variables, so that is how the flags reach them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from server.model.files import ModelFileError
from server.settings import Settings, SettingsError, env_name

CONFIG = Path(__file__).with_name("gunicorn.conf.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve a GGUF model over HTTP (POST /api/respond, /v1/...).",
        epilog="Each flag overrides the environment variable named in brackets.",
    )
    for f in fields(Settings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), metavar="VALUE", help=f"{f.metadata['help']} [{env_name(f.name)}]"
        )
    return parser


def settings_environ(argv: list[str] | None, environ: dict[str, str]) -> dict[str, str]:
    """The environment with the given flags laid over it; SettingsError if any value is bad."""
    given = {name: text for name, text in vars(build_parser().parse_args(argv)).items() if text is not None}
    merged = {**environ, **{env_name(name): text for name, text in given.items()}}
    Settings.from_env(merged)  # fail here, with the variable named, before gunicorn starts
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pull"]:
        from server.pull_cli import main as pull

        return pull(argv[1:])
    try:
        environ = settings_environ(argv, dict(os.environ))
        # The presets and the default model's whole file are checked here, before gunicorn forks a worker.
        from server.http.app import check_library

        check_library(Settings.from_env(environ))
    except (SettingsError, ModelFileError) as exc:
        sys.stderr.write(f"laptop-llama: cannot start: {exc}\n")
        return 2
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "server.http.app:create_app()"]
    os.execve(sys.executable, command, environ)  # gunicorn takes over this process
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
