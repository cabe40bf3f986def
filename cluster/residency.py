"""Which adapters an engine holds in its GPU slots and its CPU cache.

vLLM keeps both tiers as LRU caches but does not expose their contents, so the
replica mirrors them: every adapter a scheduler step runs is touched in the GPU LRU
(capacity max_loras) and the CPU LRU (capacity max_cpu_loras); an adapter loaded
from the store enters the CPU LRU. The mirror follows the same eviction rule as the
engine, so it stays exact as long as every use passes through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class LRUSet:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, None] = OrderedDict()

    def touch(self, name: str) -> str | None:
        """Mark `name` most recently used; return the name evicted to make room, if any."""
        if name in self._items:
            self._items.move_to_end(name)
            return None
        self._items[name] = None
        if len(self._items) > self.capacity:
            evicted, _ = self._items.popitem(last=False)
            return evicted
        return None

    def discard(self, name: str) -> None:
        self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def items(self) -> tuple[str, ...]:
        """Most recently used last."""
        return tuple(self._items)


class ResidencyTracker:
    def __init__(self, gpu_slots: int, cpu_slots: int):
        self.gpu = LRUSet(gpu_slots)
        self.cpu = LRUSet(cpu_slots)
        self.loads = 0

    def loaded(self, name: str) -> None:
        """The engine read `name` from the store into its CPU cache."""
        self.loads += 1
        evicted = self.cpu.touch(name)
        if evicted is not None:
            self.gpu.discard(evicted)

    def ran(self, names: Iterable[str]) -> None:
        """A scheduler step ran requests for these adapters. One that was not in the
        CPU cache had to be read from the store again: that counts as a load."""
        for name in names:
            if name not in self.cpu:
                self.loads += 1
            self.gpu.touch(name)
            evicted = self.cpu.touch(name)
            if evicted is not None:
                self.gpu.discard(evicted)

    def forget(self, name: str) -> None:
        self.gpu.discard(name)
        self.cpu.discard(name)

    def gpu_resident(self) -> tuple[str, ...]:
        return self.gpu.items()

    def cpu_resident(self) -> tuple[str, ...]:
        """Adapters in host memory but not in a GPU slot."""
        return tuple(n for n in self.cpu.items() if n not in self.gpu)
