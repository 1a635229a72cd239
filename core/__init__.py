"""The foundation every layer may use: settings, the Kafka config builder, the ClickHouse
client factory (``core.store``), logging and discovery of the processes of a local stack.

It imports nothing of the project but ``schemas``.
"""
