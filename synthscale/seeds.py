"""Seed mixing: one stable integer seed from several (a run's seed, an epoch, a rank, a worker, a salt).

The lowest level of the package (no synthscale import): the data loader's streams
(`synthscale.data.loader`) and each rank's own draws (`synthscale.distributed.rank_seed`) both mix
their seeds here.
"""

from __future__ import annotations


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash()): FNV-1a-style mixing of
    each part's low 48 bits."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h
