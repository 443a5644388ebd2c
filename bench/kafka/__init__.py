"""Kafka trigger throughput vs a raw kafka-python consumer loop (``python -m bench.kafka``)."""
