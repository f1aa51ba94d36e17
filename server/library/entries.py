"""What the library keeps of each model in memory, and the holds requests take on them.

An Entry is a model's engine with what it takes (estimated, then measured), its keep-alive
and whether it is pinned; a Lease holds an entry from the moment a route gets it until the
request is handed to its engine (whose own count of running and queued requests keeps it
busy from then on); NoRoom is the 503 of a model that does not fit in the budget.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field

from server.engine.engine import Engine
from server.errors import ServerError
from server.library.catalog import Model
from server.model.memory import Memory
from server.model.offload import MIB
from server.settings import Settings


class NoRoom(ServerError):
    """The model does not fit beside the busy ones before the request's deadline."""

    status, type = 503, "insufficient_memory"

    def __init__(self, message: str, retry_after: int | None = 5) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)} if retry_after else {}


@dataclass(eq=False)
class Entry:
    """One model in memory (or on its way in or out)."""

    model: Model
    engine: Engine
    memory: Memory  # the estimate, then what llama.cpp reported
    keep_alive: float | None  # seconds after its last request; None: forever
    pinned: bool
    owned: bool = True  # False: an engine the caller made and closes (tests)
    measured: bool = False
    leases: int = 0
    loaded_at: float = field(default_factory=time.time)
    estimate: Memory | None = None

    @property
    def idle(self) -> bool:
        return self.leases == 0 and not self.engine.busy

    def expires_in(self, now: float) -> float | None:
        """Seconds until its keep_alive runs out (negative: past), None when it never does."""
        if self.pinned or self.keep_alive is None:
            return None
        since = now if not self.idle else self.engine.last_active
        return since + self.keep_alive - now


@dataclass(eq=False)
class Load:
    """A load in progress: the requests that wait for it read its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    error: ServerError | None = None
    waiting: int = 0


class Lease:
    """A hold on a loaded model's engine, from `use` until the request is handed over."""

    def __init__(self, entry: Entry, cond: threading.Condition) -> None:
        self.entry, self._cond = entry, cond
        self.engine, self.model = entry.engine, entry.model
        self._held = True

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            with self._cond:
                self.entry.leases -= 1
                self._cond.notify_all()


def measured(engine: Engine, estimate_: Memory) -> tuple[Memory, bool]:
    sizes = engine.info.get("memory") or {}
    if not sizes:
        return estimate_, False
    return Memory(**{k: int(v) for k, v in sizes.items()}, cache_ram=estimate_.cache_ram), True


def cache_mib(settings: Settings, plan: object) -> int:
    from server.engine.loading import cache_ram_mib

    return cache_ram_mib(settings, plan)  # type: ignore[arg-type]


def describe(memory: Memory) -> str:
    vram = f", VRAM {memory.vram // MIB} MiB" if memory.vram else ""
    return f"RAM {memory.ram // MIB} MiB{vram}"


def return_freed_memory() -> None:
    """Give the heap's freed pages back to the system (glibc keeps them otherwise), so the
    process's RSS falls by what the unloaded model held."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
