"""The exceptions of Sluiceway, one tree for every stage of the data path.

Retry code branches on the two marker mixins, never on message text::

    SluicewayError
     ├── ConfigError (Terminal)            bad settings or pipeline specification
     │    └── SettingsError                settings failed validation: field, value, fix
     ├── StackError                        the local stack of real servers
     │    ├── MissingDependency (Terminal) a binary or jar is not installed: names the package
     │    ├── PortInUse (Terminal)         a port is taken: names the port and the setting
     │    └── ServiceUnhealthy (Terminal)  a server did not become healthy: carries its log tail
     ├── SourceError                       reading a source database
     │    ├── SourceUnavailable (Transient)
     │    └── SourceFatal (Terminal)       slot gone, binlog purged, permission denied, ...
     │         └── RecordFailed            one record failed (decode, transform) under
     │                                     errors.tolerance none: names it and its position
     ├── KafkaError                        producing to or consuming from Kafka
     │    ├── KafkaUnavailable (Transient)
     │    └── KafkaFatal (Terminal)
     └── SinkError                         writing to a target
          ├── SinkUnavailable (Transient)
          └── SinkFatal (Terminal)
               ├── BadRecords              named records are not change events
               └── IncompatibleChange      a table the target cannot take as it is

`Transient` errors are retried with backoff; `Terminal` errors stop the work, alert and keep
the data where it is. Library errors are translated at the boundary with ``raise ... from exc``
so the cause is kept.
"""

from __future__ import annotations

__all__ = [
    "BadRecords",
    "ConfigError",
    "IncompatibleChange",
    "KafkaError",
    "KafkaFatal",
    "KafkaUnavailable",
    "MissingDependency",
    "PortInUse",
    "RecordFailed",
    "ServiceUnhealthy",
    "SettingsError",
    "SinkError",
    "SinkFatal",
    "SinkUnavailable",
    "SluicewayError",
    "SourceError",
    "SourceFatal",
    "SourceUnavailable",
    "StackError",
    "Terminal",
    "Transient",
]


class SluicewayError(Exception):
    """The base of every error Sluiceway raises on purpose."""


class Transient:
    """Marker: the operation may succeed if retried with backoff."""


class Terminal:
    """Marker: retrying will not help; stop, alert, and keep the data."""


class ConfigError(SluicewayError, Terminal):
    """A setting or a pipeline specification is invalid."""


class SettingsError(ConfigError):
    """Settings failed validation; the message names each field, its value and the fix."""


class StackError(SluicewayError):
    """Something went wrong with a server of the local stack."""


class MissingDependency(StackError, Terminal):
    """A binary, jar or virtualenv a service needs is not installed."""


class PortInUse(StackError, Terminal):
    """A port a service must listen on is taken by another process."""


class ServiceUnhealthy(StackError, Terminal):
    """A service did not become healthy in time (or died); the message carries its log tail."""


class SourceError(SluicewayError):
    """Reading a source database failed."""


class SourceUnavailable(SourceError, Transient):
    """The source database cannot be reached right now."""


class SourceFatal(SourceError, Terminal):
    """The source cannot be read without a human: slot gone, permission denied, ..."""


class RecordFailed(SourceFatal):
    """Capture could not turn one source record into an event (decode, transform, serialize)
    and ``errors.tolerance`` is none: the message names the pipeline, stage, table, position
    and error."""


class KafkaError(SluicewayError):
    """Producing to or consuming from Kafka failed."""


class KafkaUnavailable(KafkaError, Transient):
    """The brokers cannot be reached right now."""


class KafkaFatal(KafkaError, Terminal):
    """Kafka refused the work for good: authorization, a fenced producer, a missing topic."""


class SinkError(SluicewayError):
    """Writing to a target failed."""


class SinkUnavailable(SinkError, Transient):
    """The target cannot be reached right now."""


class SinkFatal(SinkError, Terminal):
    """The target refused the write for good: schema conflict, permission denied."""


class BadRecords(SinkFatal):
    """Records of a batch are not change events (the rest of the batch is sound).

    ``records`` are (topic, partition, offset, reason).
    """

    def __init__(self, records: list[tuple[str, int, int, str]]) -> None:
        self.records = records
        topic, partition, offset, reason = records[0]
        more = f" (and {len(records) - 1} more)" if len(records) > 1 else ""
        super().__init__(f"{topic}[{partition}]@{offset} is not a change event: {reason}{more}")


class IncompatibleChange(SinkFatal):
    """A table the target cannot take as it is: a source type change that would alter stored
    values, a table without primary key for current state."""
