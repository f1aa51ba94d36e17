"""A loopback Hugging Face Hub that serves files, for the pull tests: the real huggingface-hub
client (model_info, hf_hub_url, http_get) talks to it over real sockets.

It answers `GET /api/models/USER/REPO[/revision/REV]` with the repo's siblings and their LFS
sha256 (as the Hub does with `blobs=true`) and `GET /USER/REPO/resolve/REV/FILE` with the
bytes, honouring `Range` (206), at `rate` bytes per second if set. Conditions the Hub
cannot be made to produce on demand are switches: `cut_after` closes the connection
after that many bytes of a body, `lie` maps a file to the (wrong) sha256 and size the
metadata claims, `gated` answers as for a repo whose licence is not accepted.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


class FileHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.rate: float | None = None
        self.cut_after: int | None = None
        self.lie: dict[str, tuple[str, int]] = {}
        self.gated: set[str] = set()
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                hub._answer(self, body=True)

            def do_HEAD(self):  # noqa: N802
                hub._answer(self, body=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FileHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(h.path.split("?")[0])
        self.requests.append((h.command, path, h.headers.get("Range", "")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._info("/".join(parts[2:4]), h)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file("/".join(parts[:2]), "/".join(parts[4:]), h, body)
        return _json(h, 404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})

    def _info(self, repo: str, h) -> None:
        if repo in self.gated:
            return _json(h, 403, {"error": "gated"}, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
        if repo not in self.repos:
            return _json(h, 401, {"error": "not found"}, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "nope"})
        siblings = []
        for name, data in self.repos[repo].items():
            sha, size = self.lie.get(name, (hashlib.sha256(data).hexdigest(), len(data)))
            entry = {"rfilename": name, "size": size}
            if name.endswith(".gguf"):
                entry["lfs"] = {"sha256": sha, "size": size, "pointerSize": 134}
            siblings.append(entry)
        _json(h, 200, {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings, "private": False})

    def _file(self, repo: str, name: str, h, body: bool) -> None:
        if repo in self.gated:
            return _json(h, 403, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
        data = self.repos.get(repo, {}).get(name)
        if data is None:
            return _json(h, 404, {"error": "no such file"}, {"X-Error-Code": "EntryNotFound"})
        start = 0
        if (given := h.headers.get("Range", "")).startswith("bytes="):
            start = int(given[6:].split("-")[0])
        part = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(part)))
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", COMMIT)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        sent, chunk = 0, 64 * 1024
        while sent < len(part):
            if self.cut_after is not None and start + sent >= self.cut_after:
                h.close_connection = True
                h.connection.shutdown(2)  # a cut: the client sees the body end early
                return
            piece = part[sent : sent + chunk]
            if self.cut_after is not None:
                piece = piece[: max(self.cut_after - start - sent, 0)] or piece[:0]
            h.wfile.write(piece)
            sent += len(piece) or chunk
            if self.rate:
                time.sleep(len(piece) / self.rate)


def _json(h, status: int, payload: dict, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)
