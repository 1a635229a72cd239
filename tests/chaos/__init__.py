"""The chaos suite: events produced while the sink and the stream worker are killed and
paused, with fuzzed bad messages mixed in; afterwards every event is counted once and
every bad message is accounted for once. ``python -m tests.chaos --help``."""
