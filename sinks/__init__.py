"""Kafka → ClickHouse: the sink, its row mapping, its DLQ, and the migrations it runs."""
