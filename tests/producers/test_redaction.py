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


def test_the_findings_of_issue_21_are_redacted():
    r = Redactor(["password", "pwd", "credentials", "api_key"])
    stripe = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    out = r.redact({"passwd_hint": "x", "pwd": "y", "Credentials": "z", "x-api-key": "k",
                    "note": f"refund via {stripe}", "url": "https://bob:pw12@api.example.com/",
                    "body": '{"password": "hunter2", "ok": 1}'})
    assert out["pwd"] == out["Credentials"] == out["x-api-key"] == REDACTED
    assert stripe not in out["note"] and "bob:pw12" not in out["url"]
    assert out["body"] == '{"password":"[REDACTED]","ok":1}'
