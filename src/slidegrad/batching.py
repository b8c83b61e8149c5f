"""Splitting work by a memory budget (Captum's internal batching, across tiles too).

A job's work is a list of *items* — (tile, integration step, noise sample)
triples — each one model forward + backward pass.  :func:`batch_size` turns a
byte budget and a per-item cost into how many items go to the model at once;
:func:`chunks` walks the items in such batches.
"""

from __future__ import annotations

from typing import Iterator

from .errors import check

DEFAULT_BUDGET_FRACTION = 0.5
BACKWARD_FACTOR = 3  # activations kept for backward + their gradients + the input's
CPU_MAX_BATCH = 32  # on a CPU, bigger batches stop paying off (memory bandwidth, page faults)


def available_host_memory() -> int:
    """Bytes the kernel reports as available (``MemAvailable``), or 4 GiB where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def item_bytes(activation_bytes: int, input_bytes: int) -> int:
    """Estimated peak bytes of one item: activations (kept for backward, and their gradients) plus the input."""
    return BACKWARD_FACTOR * activation_bytes + 4 * input_bytes


def batch_size(budget: int, per_item: int, limit: int | None = None) -> int:
    """How many items fit in ``budget`` bytes (at least 1, at most ``limit``)."""
    check(budget > 0, f"memory_budget: must be positive, got {budget}")
    size = max(1, budget // max(per_item, 1))
    return min(size, limit) if limit else size


def chunks(total: int, size: int) -> Iterator[range]:
    """``range(total)`` in consecutive pieces of at most ``size``."""
    for start in range(0, total, size):
        yield range(start, min(start + size, total))
