"""How every long reader of Kafka fetches: a shallow prefetch queue, refilled at once.

Used by the loaders (`loaders.runner`) and the processors' table views
(`streaming.processors.tables`), which read whole topics from the beginning.
"""

from __future__ import annotations

__all__ = ["SHALLOW_FETCH"]

SHALLOW_FETCH = {
    "fetch.max.bytes": 2 * 1024 * 1024,
    "max.partition.fetch.bytes": 1024 * 1024,
    "queued.min.messages": 10_000,
    "queued.max.messages.kbytes": 8 * 1024,
    "fetch.queue.backoff.ms": 5,
}
"""librdkafka settings: a shallow prefetch queue, refilled at once.

librdkafka stops fetching a partition while its local queue is over ``queued.min.messages``
or ``queued.max.messages.kbytes``, and then waits ``fetch.queue.backoff.ms`` (1 s by default)
before it looks again: a Python loop that empties a small queue sooner than that starves, which
is why a deep queue (64 MiB fetches, 200k messages per partition) used to be the fast choice.
With the wait at 5 ms a small queue is refilled as it drains, and memory stays small: what
librdkafka holds is a few compressed fetches and their decompressed message sets (lz4 makes a
fetch ~4x its size in memory), so small fetches keep it small at no cost in speed. A bare
consume loop over a 1M-event window, peak RSS with the loader's imports: ~0.6M records/s at
475 MiB with the deep queue; ~1.2-1.6M at 180 MiB with 8 MiB fetches and this queue;
~1.4-1.8M at 130 MiB with these 2 MiB fetches. ``sluiceway load window`` of the same window
into DuckDB: ~650 -> ~320 MiB, at the same speed."""
