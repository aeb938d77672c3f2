"""Loaders: Kafka topics into targets, one package per target on one Sink base."""

__all__: list[str] = []
