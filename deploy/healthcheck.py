"""The container's HEALTHCHECK: exit 0 when /api/health answers 200 (model loaded, serving), else 1.

Standard library only, so the image needs no curl. It asks the port the server listens on
(LLAMA_SERVER_PORT) over loopback, whatever address the server is bound to.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("LLAMA_SERVER_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503 while loading or after a failed load
        sys.stderr.write(f"health: {exc.code}\n")
    except OSError as exc:  # refused, timed out
        sys.stderr.write(f"health: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
