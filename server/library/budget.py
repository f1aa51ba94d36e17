"""The memory budget: how much loaded models may take, and which idle one gives way.

RAM_BUDGET_MB and VRAM_BUDGET_MB default to what is available when the server starts,
less RAM_MARGIN_MB / VRAM_MARGIN_MB. A model is admitted when its reservation (what
llama.cpp reported it takes once loaded, an estimate before; plus the most its prompt
cache may grow to) fits beside the models already loaded. Otherwise the idle models
give way, those whose keep_alive has run out first, then the least recently used;
never a pinned one, never one with a request running or queued. These are pure
functions over numbers, so the rules are tested without the memory they talk about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from server.model.memory import Memory
from server.model.offload import MIB, gpu_devices
from server.model.parallel import available_ram
from server.settings import Settings


@dataclass(frozen=True)
class Budget:
    ram: int  # bytes
    vram: int

    def describe(self) -> str:
        vram = f", VRAM {self.vram // MIB} MiB" if self.vram else ""
        return f"RAM {self.ram // MIB} MiB{vram}"


def cgroup_room() -> int | None:
    """What this process's memory cgroup still allows (a container's limit less its use), if limited:
    inside a container /proc/meminfo shows the whole node, not the limit the kernel enforces."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max", or v1's huge number: no limit
            return max(int(limit) - used, 0)
    return None


def budget_from(settings: Settings, ram_available: int | None = -1, vram_free: int | None = None) -> Budget:
    """The settings' budgets, else what is free now less the margins (-1 / None: read them; a
    container's memory limit counts)."""
    if settings.ram_budget_mb is not None:
        ram = settings.ram_budget_mb * MIB
    else:
        available = available_ram() if ram_available == -1 else ram_available
        room = cgroup_room() if ram_available == -1 else None
        if room is not None:
            available = min(available or room, room)
        ram = max((available or 0) - settings.ram_margin_mb * MIB, 0)
    if settings.vram_budget_mb is not None:
        vram = settings.vram_budget_mb * MIB
    else:
        free = sum(d.free_bytes for d in gpu_devices()) if vram_free is None else vram_free
        vram = max(free - settings.vram_margin_mb * MIB, 0) if free else 0
    return Budget(ram, vram)


@dataclass(frozen=True)
class Resident:
    """A loaded (or loading, or unloading) model as the budget sees it."""

    name: str
    reserved: Memory
    idle: bool  # no request running, queued or about to be
    pinned: bool
    expired: bool  # its keep_alive has run out
    last_used: float  # monotonic time of its last request's end


def reservation(memory: Memory) -> tuple[int, int]:
    """(RAM, VRAM) a model holds against the budget."""
    return memory.ram + memory.cache_ram, memory.vram


def shortfall(budget: Budget, residents: Sequence[Resident], need: Memory) -> tuple[int, int]:
    """(RAM, VRAM) bytes missing to admit `need` beside `residents` (0, 0 when it fits)."""
    ram = sum(reservation(r.reserved)[0] for r in residents)
    vram = sum(reservation(r.reserved)[1] for r in residents)
    need_ram, need_vram = reservation(need)
    return max(ram + need_ram - budget.ram, 0), max(vram + need_vram - budget.vram, 0) if need_vram else 0


def victims(residents: Sequence[Resident]) -> list[Resident]:
    """The models that may be unloaded, in the order they give way."""
    free = [r for r in residents if r.idle and not r.pinned]
    return sorted(free, key=lambda r: (not r.expired, r.last_used))


def could_ever_fit(budget: Budget, residents: Sequence[Resident], need: Memory) -> bool:
    """Whether `need` fits once every model that is not pinned has gone."""
    return shortfall(budget, [r for r in residents if r.pinned], need) == (0, 0)
