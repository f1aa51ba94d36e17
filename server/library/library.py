"""The library's loaded models: load on demand within the budget, keep alive, unload (entries.py: what is kept of each).

`use(name, keep_alive)` is what every route calls: it yields the named model's ready
engine, loading it first if need be, and holds it (a lease) until the request has been
handed to the engine, whose own count of running and queued requests keeps it busy from
then on. A model is loaded by one request at a time (one load at a time in all):
requests for a model that is loading wait for that load (at most PARALLEL + QUEUE_SIZE of
them, as its queue), requests for loaded models never wait on a load. Before a load the
model's memory is estimated (server/model/memory.py) and room is made by unloading idle
models (server/library/budget.py); if busy models hold the room, the load waits for them
up to the request's deadline, then 503 with Retry-After. After the load, llama.cpp's own
report of its buffers replaces the estimate. A load that fails is told to the requests
that waited for it and shown in the listings; the next request tries again.

A reaper thread unloads models whose keep_alive has run out once they are idle.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

from server.engine.engine import Engine
from server.errors import ModelFailed, QueueFull, ServerError
from server.library.budget import Budget, Resident, could_ever_fit, shortfall, victims
from server.library.catalog import Catalog, Model
from server.library.entries import Entry, Lease, Load, NoRoom, cache_mib, describe, measured, return_freed_memory
from server.model.files import ModelChoice
from server.model.memory import Memory, estimate
from server.model.parallel import plan_parallel
from server.settings import Settings

log = logging.getLogger("server")
DEFAULT = object()  # keep_alive not given: the model's preset, else KEEP_ALIVE


class Library:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        budget: Budget,
        engine_factory: Callable[[Settings, ModelChoice], Engine] = Engine,
    ) -> None:
        self.settings, self.catalog, self.budget = settings, catalog, budget
        self._make_engine = engine_factory
        self._cond = threading.Condition()
        self._loaded: dict[str, Entry] = {}
        self._loads: dict[str, Load] = {}
        self._unloading: list[Entry] = []
        self.failures: dict[str, str] = {}  # model name -> why its last load failed
        self._default: str | None = None  # set by serve_as_default
        self._preloading: set[str] = set()
        self._load_lock = threading.Lock()
        self._closed = False
        self._reaper = threading.Thread(target=self._reap, name="model-reaper", daemon=True)
        self._reaper.start()

    # --- what routes call -------------------------------------------------------------
    def use(self, name: str | None, keep_alive: object = DEFAULT, timeout: float | None = None) -> "Lease":
        """A lease on the ready engine of the model `name` names (None: the default)."""
        model = self.catalog.find(name) if name else self.default_model()
        deadline = time.monotonic() + (timeout or self.settings.request_timeout)
        entry = self._acquire(model, deadline)
        with self._cond:
            entry.keep_alive = self._keep_alive(model, keep_alive)
        return Lease(entry, self._cond)

    def load(self, name: str, keep_alive: object = DEFAULT) -> Entry:
        """Load `name` (if it is not) and return its entry, without holding it."""
        with self.use(name, keep_alive) as lease:
            return lease.entry

    def unload(self, name: str) -> bool:
        """Unload `name` as soon as it is idle (requests running on it finish); False if it was not loaded."""
        model = self.catalog.find(name)
        with self._cond:
            entry = self._loaded.get(model.name)
            if entry is None:
                return False
            entry.keep_alive, entry.pinned = 0.0, False
            if entry.idle:
                self._start_unload(entry)
            self._cond.notify_all()
        return True

    def default_model(self) -> Model:
        """The model answering requests that name none."""
        if self._default is not None:
            return self.catalog.find(self._default)
        return self.catalog.default()

    def preload(self, name: str) -> threading.Thread:
        """Start loading `name` in the background (the default model, at start)."""

        def load() -> None:
            try:
                self.load(name)
            except ModelFailed as exc:  # the engine has logged llama.cpp's reason
                log.debug("preloading %s failed: %s", name, exc.message)
            except ServerError as exc:  # it does not fit the budget, say: shown as a failed load
                self.failures.setdefault(name, exc.message)
                log.error("cannot load %s: %s", name, exc.message)
            finally:
                with self._cond:
                    self._preloading.discard(name)
                    self._cond.notify_all()

        with self._cond:
            self._preloading.add(name)  # "loading" from now on, not once the thread gets going
        thread = threading.Thread(target=load, name="model-preload", daemon=True)
        thread.start()
        return thread

    def wait_loaded(self, name: str, timeout: float | None = None) -> bool:
        """Wait until `name` is loaded (True) or its load failed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        model = self.catalog.find(name)
        with self._cond:
            while True:
                state = self.status(model)
                if state in ("loaded", "failed"):
                    return state == "loaded"
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._cond.wait(0.5 if deadline is None else max(min(deadline - time.monotonic(), 0.5), 0.001))

    def serve_as_default(self, engine: Engine, model: Model) -> Entry:
        """Serve an engine made (and closed) by the caller as the default model, pinned."""
        found = next((m for m in self.catalog.models() if m.path == model.path and m.source != "preset"), None)
        if found is None:
            self.catalog.extras.append(model)
            self.catalog.scan()
            found = self.catalog.find(model.name)
        self._default = found.name
        return self.adopt(engine, found)

    def entries(self) -> list[Entry]:
        with self._cond:
            return list(self._loaded.values())

    def entry(self, name: str) -> Entry | None:
        with self._cond:
            return self._loaded.get(name)

    def status(self, model: Model) -> str:
        """loaded, loading, unloading, failed or unloaded."""
        with self._cond:
            entry = self._loaded.get(model.name)
            if entry is not None:
                return "loaded" if entry.engine.state == "ready" else entry.engine.state
            if model.name in self._loads or model.name in self._preloading:
                return "loading"
            if any(e.model.name == model.name for e in self._unloading):
                return "unloading"
            return "failed" if model.name in self.failures else "unloaded"

    def adopt(self, engine: Engine, model: Model) -> Entry:
        """Serve an engine made (and closed) by the caller as `model`, pinned."""
        entry = Entry(model, engine, Memory(), None, True, owned=False)
        engine.on_idle = self._notify
        with self._cond:
            self._loaded[model.name] = entry
        return entry

    def close(self) -> None:
        with self._cond:
            self._closed = True
            entries, self._loaded = list(self._loaded.values()), {}
            self._cond.notify_all()
        for entry in entries:
            if entry.owned:
                entry.engine.close(timeout=5)

    # --- loading ----------------------------------------------------------------------
    def _acquire(self, model: Model, deadline: float) -> Entry:
        """The model's ready entry, leased: at once if loaded, after another request's load
        of it, or after loading it here."""
        while True:
            with self._cond:
                entry = self._loaded.get(model.name)
                if entry is not None and entry.engine.state == "ready":
                    entry.leases += 1
                    return entry
                if entry is not None and not entry.owned:
                    entry.engine.check_ready()  # an engine given to the library: its own loading or failure
                load = self._loads.get(model.name)
                if load is not None:  # another request is loading it: wait for that load, then look again
                    self._wait_for(model, load, deadline)
                    continue
                self._loads[model.name] = load = Load()
            try:
                return self._load(model, deadline)
            except ServerError as exc:
                load.error = exc
                raise
            finally:
                with self._cond:
                    del self._loads[model.name]
                    load.done.set()
                    self._cond.notify_all()

    def _wait_for(self, model: Model, load: Load, deadline: float) -> None:
        """Called holding the condition: wait for the load of `model` another request started;
        its error is this request's too (a failed load is retried only by a new request)."""
        limit = self.settings.queue_size + (self.settings.parallel if isinstance(self.settings.parallel, int) else 4)
        if load.waiting >= limit:
            raise QueueFull(limit)
        load.waiting += 1
        try:
            while not load.done.is_set():
                if time.monotonic() >= deadline:
                    raise NoRoom(f"model '{model.name}' is still loading; retry shortly")
                self._cond.wait(max(deadline - time.monotonic(), 0.001))
        finally:
            load.waiting -= 1
        if load.error is not None:
            raise load.error

    def _load(self, model: Model, deadline: float) -> Entry:
        """Make room and load `model`, one load at a time; the entry comes back leased."""
        if not self._load_lock.acquire(timeout=max(deadline - time.monotonic(), 0.001)):
            raise NoRoom(f"model '{model.name}' waits for another model to load; retry shortly")
        try:
            settings = self.settings_for(model)
            try:
                plan = plan_parallel(settings, model.path)
                need = estimate(settings, model.path, plan, cache_mib(settings, plan))
            except (OSError, ValueError) as exc:
                raise self._failed(model, f"cannot read its file: {exc}") from None
            self._make_room(model, need, deadline)
            engine = self._make_engine(settings, ModelChoice(model.path, is_default=False))
            entry = Entry(model, engine, need, self._keep_alive(model, DEFAULT), self._pinned(model), estimate=need)
            engine.on_idle = self._notify
            with self._cond:
                self._loaded[model.name] = entry
            engine.start()
            engine.wait_ready()
            if engine.state != "ready":
                with self._cond:
                    self._loaded.pop(model.name, None)
                raise self._failed(model, engine.load_error or "the load failed")
            with self._cond:
                self.failures.pop(model.name, None)
                entry.memory, entry.measured = measured(engine, need)
                entry.leases += 1
                self._cond.notify_all()
            log.info("loaded %s: %s", model.name, describe(entry.memory))
            return entry
        finally:
            self._load_lock.release()

    def _failed(self, model: Model, reason: str) -> ModelFailed:
        self.failures[model.name] = reason  # the engine has logged why, on one line
        return ModelFailed(f"model '{model.name}' failed to load: {reason}")

    def _make_room(self, model: Model, need: Memory, deadline: float) -> None:
        """Unload idle models until `need` fits, waiting for busy ones up to `deadline`."""
        with self._cond:
            while True:
                residents = self._residents()
                if shortfall(self.budget, residents, need) == (0, 0):
                    return
                if not could_ever_fit(self.budget, residents, need):
                    raise NoRoom(
                        f"model '{model.name}' needs {describe(need)}; the budget is {self.budget.describe()} "
                        "and pinned models hold part of it",
                        retry_after=None,
                    )
                free = [v for v in victims(residents) if v.name in self._loaded]
                if free:
                    self._start_unload(self._loaded[free[0].name])
                    continue
                if time.monotonic() >= deadline:
                    raise NoRoom(f"model '{model.name}' does not fit beside the busy models: {describe(need)} needed")
                self._cond.wait(max(deadline - time.monotonic(), 0.001))

    def _residents(self) -> list[Resident]:
        now = time.monotonic()
        residents = [
            Resident(e.model.name, e.memory, e.idle, e.pinned, (e.expires_in(now) or 1) <= 0, e.engine.last_active)
            for e in self._loaded.values()
        ]
        # Models on their way out hold their memory until closed: not victims, but not there for good.
        return residents + [Resident(e.model.name, e.memory, False, False, False, 0) for e in self._unloading]

    # --- unloading --------------------------------------------------------------------
    def _start_unload(self, entry: Entry) -> None:
        """Called holding the condition: take `entry` out, and close its engine in the background
        (its memory counts until it is closed)."""
        self._loaded.pop(entry.model.name, None)
        if not entry.owned:
            return
        self._unloading.append(entry)
        threading.Thread(target=self._close, args=(entry,), name="model-unload", daemon=True).start()

    def _close(self, entry: Entry) -> None:
        entry.engine.close(timeout=self.settings.request_timeout + 5)
        return_freed_memory()
        with self._cond:
            self._unloading.remove(entry)
            self._cond.notify_all()
        log.info("unloaded %s", entry.model.name)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _reap(self) -> None:
        """Unload idle models whose keep_alive ran out."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                waits = []
                for entry in list(self._loaded.values()):
                    left = entry.expires_in(now)
                    if left is not None and left <= 0 and entry.idle and entry.engine.state != "loading":
                        self._start_unload(entry)
                    elif left is not None:
                        waits.append(max(left, 0.05))
                self._cond.wait(min(waits, default=5.0))

    # --- per-model settings -----------------------------------------------------------
    def settings_for(self, model: Model) -> Settings:
        return model.preset.apply(replace(self.settings, model=str(model.path)))

    def _keep_alive(self, model: Model, given: object) -> float | None:
        if given is not DEFAULT:
            return given  # type: ignore[return-value]
        preset = model.preset.keep_alive
        return self.settings.keep_alive if preset == "default" else preset  # type: ignore[return-value]

    def _pinned(self, model: Model) -> bool:
        if model.preset.pinned is not None:
            return model.preset.pinned
        try:
            return model.name == self.default_model().name
        except Exception:  # noqa: BLE001 - no default model: nothing is pinned for being it
            return False
