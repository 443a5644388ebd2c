"""The Kafka market pipeline deployed vs the batch pipeline (``python -m bench.pipeline``)."""
