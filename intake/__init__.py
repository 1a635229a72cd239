"""OpenTelemetry intake: OTLP spans (GenAI semconv, OpenInference, OpenLLMetry) → ledger
events. Decoding in :mod:`.decode`, the per-span table in :mod:`.mapping`, runs and the
hash chain in :mod:`.runs`, publishing in :mod:`.publish`. See ``docs/otel.md``."""
