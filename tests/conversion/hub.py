"""Test doubles for the Hugging Face Hub that run the real huggingface-hub client code.

`LoopbackHub` is an HTTP server on 127.0.0.1 that answers the Hub's API routes
the way the Hub does for the error cases (status plus X-Error-Code header), so
huggingface-hub builds its own GatedRepoError, RepositoryNotFoundError and
RevisionNotFoundError from real responses. `build_cache` lays a checkpoint out
in the real cache layout (models--org--name/blobs, snapshots/<commit>,
refs/main) for offline runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def error(status: int, code: str, message: str):
    return status, {"X-Error-Code": code, "X-Error-Message": message}, {"error": message}


def model_info(repo_id: str, sizes: dict[str, int]):
    siblings = [{"rfilename": name, "size": size} for name, size in sizes.items()]
    return 200, {}, {"id": repo_id, "sha": COMMIT, "siblings": siblings, "private": False}


class LoopbackHub:
    """routes: URL path -> (status, headers, JSON body)."""

    def __init__(self, routes: dict[str, tuple[int, dict, dict]]):
        self.routes, self.requests = routes, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                hub.requests.append(path)
                status, headers, body = hub.routes.get(path, error(404, "RepoNotFound", "not found"))
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def build_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """Put `checkpoint`'s files into a Hugging Face cache folder; return the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in sorted(checkpoint.iterdir()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot
