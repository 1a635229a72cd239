from agentledger.core.redaction import REDACTED, Redactor


def test_secret_keys_are_redacted_at_any_depth():
    r = Redactor(["password", "token"])
    out = r.redact({"user": "bob", "db_password": "hunter2",
                    "nested": [{"Refresh_Token": "abc", "ok": 1}]})
    assert out == {"user": "bob", "db_password": REDACTED,
                   "nested": [{"Refresh_Token": REDACTED, "ok": 1}]}


def test_secret_shaped_values_are_redacted_in_free_text():
    r = Redactor([])
    text = r.redact("call with Authorization: Bearer abcdefghijklmnopqrstu please")
    assert "abcdefghijklmnop" not in text and REDACTED in text
    assert r.redact("key sk-live-0123456789abcdefghij") == f"key {REDACTED}"
    assert r.redact("AKIAABCDEFGHIJKLMNOP") == REDACTED


def test_original_is_not_mutated():
    args = {"password": "x"}
    Redactor(["password"]).redact(args)
    assert args == {"password": "x"}
