"""The intake's key ring: the configured keys and the operator key, read again on change."""

from __future__ import annotations

from pathlib import Path

from agentledger.auth import (
    OPERATOR_KEY_FILE,
    ReloadingKeyRing,
    append_entry,
    entry_for,
    keys_file,
    mint_operator_key,
    new_key,
)
from agentledger.core.settings import Settings


def test_reloading_key_ring_takes_new_keys_and_a_new_operator_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ring = ReloadingKeyRing(settings, min_interval_s=0.0)
    first = new_key()
    assert ring.authenticate(first) is None and len(ring) == 0  # no files yet
    append_entry(settings, entry_for("acme-writer", first, ["acme"]))
    who = ring.authenticate(first)
    assert who is not None and who.tenants == frozenset({"acme"})

    old, _ = mint_operator_key(settings)
    assert ring.authenticate(old) is not None and ring.authenticate(old).operator
    new, _ = mint_operator_key(settings)  # a restarted store mints another
    assert ring.authenticate(new) is not None and ring.authenticate(old) is None

    # a keys file being edited (not YAML for a moment) keeps the keys read last
    keys_file(settings).write_text("keys: [unclosed")
    assert ring.authenticate(first) is not None
    (settings.run_dir / OPERATOR_KEY_FILE).unlink()
    keys_file(settings).write_text("keys: []\n")
    assert ring.authenticate(first) is None and ring.authenticate(new) is None


def test_reloading_key_ring_reads_the_files_at_most_once_per_interval(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ring = ReloadingKeyRing(settings, min_interval_s=3600.0)
    key = new_key()
    assert ring.authenticate(key) is None
    append_entry(settings, entry_for("late", key, ["acme"]))
    assert ring.authenticate(key) is None, "not read again within the interval"
