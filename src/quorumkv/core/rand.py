"""A tiny seeded PRNG (SplitMix64) for the core: no global random state.

The shell seeds it from the OS; the simulator from its run seed. Only used for
choices that need not be secure (gossip targets, read-repair chance).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

_MASK = (1 << 64) - 1


class SplitMix64:
    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self.next64() >> 11) / (1 << 53)

    def randrange(self, n: int) -> int:
        return self.next64() % n if n > 0 else 0

    def sample(self, items: Iterable[T], k: int) -> list[T]:
        pool = list(items)
        out = []
        for _ in range(min(k, len(pool))):
            out.append(pool.pop(self.randrange(len(pool))))
        return out
