"""gunicorn settings for the server, read from the same LLAMA_SERVER_* settings as the app.

Run with: gunicorn -c server/gunicorn.conf.py 'server.http.app:create_app()'
A bad setting or model path stops here, in the master, with one line naming it.
"""

import sys
import threading

from gunicorn.arbiter import Arbiter

from server.http.app import check_library
from server.model.files import ModelFileError
from server.settings import Settings, SettingsError

try:
    _settings = Settings.from_env()
    check_library(_settings)  # presets, the default model (the embedded one made once, before any fork)
except (SettingsError, ModelFileError) as exc:
    sys.stderr.write(f"laptop-llama: cannot start: {exc}\n")
    sys.exit(2)

bind = [f"{_settings.host}:{_settings.port}"]
# Each worker holds its own models and contexts, so one by default; threads serve
# concurrent connections while the engine's queue orders the work.
workers = _settings.workers
# gthread, except that a thread gets a request only once all of it has arrived (and a request
# must arrive within READ_TIMEOUT): clients sending slowly, or not at all, cannot take the threads.
worker_class = "server.http.worker.BufferingWorker"
threads = _settings.http_threads
# Connections open at once per worker (reading, answering or kept alive); when all are taken,
# the ones that have been sending a request the longest make room.
worker_connections = 1000
# The model loads in each worker after fork (never in the master).
preload_app = False
# gthread workers heartbeat from their main loop, not from request threads, so this
# only catches a wedged worker; it never cuts a long generation short.
timeout = 120
# On SIGTERM a worker stops accepting and waits this long for in-flight answers.
graceful_timeout = int(_settings.request_timeout) + 15
keepalive = 5
# The control socket lives at one per-user path: a second server (another port, a test)
# would take it over, so leave it off.
control_socket_disable = True
accesslog = "-"


def _app_state(worker):
    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get("laptop_llama") if app is not None else None


def post_worker_init(worker):
    """A default model that fails to load at start stops the whole server, rather than leaving a
    worker that answers 503 forever: the engine logs one line saying why, and the worker exits with
    APP_LOAD_ERROR, on which gunicorn's master halts with that exit code. (Other models fail
    only the requests that asked for them.)"""
    state = _app_state(worker)
    if state is None or not hasattr(worker, "stop_with"):
        return

    def watch() -> None:
        library = state.library
        if not library.wait_loaded(library.default_model().name):
            worker.stop_with(Arbiter.APP_LOAD_ERROR)

    threading.Thread(target=watch, name="load-watch", daemon=True).start()


def worker_exit(server, worker):
    """Free the models cleanly once the worker's requests are done."""
    state = _app_state(worker)
    if state is not None:
        state.library.close()
