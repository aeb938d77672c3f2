"""Streaming: the first half of the data path, from a source database's log into Kafka.

capture (sources/) -> event contract -> transforms -> processors -> Kafka topics.
"""

__all__: list[str] = []
