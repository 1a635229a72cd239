"""Finding 9: redaction missed common secrets (Stripe ``sk_live_``, JWTs, ``Basic``,
credentials in URLs, the ledger's own ``al_`` keys, ``passwd``/``pwd``/``credentials``/
``x-api-key``, JSON inside a string).

A corpus borrowed in kind from gitleaks' rules: one realistic fake per rule, embedded in
free text the way it travels in tool arguments, each of which must come out without the
secret; and near-misses that must survive untouched (false positives cost the audit).
Fakes are assembled at run time so this file is not itself a scanner's finding."""

from __future__ import annotations

import base64
import json

import pytest

from agentledger.auth import new_key
from agentledger.core.redaction import REDACTED, Redactor, redact_text, secret_rules
from agentledger.core.settings import DEFAULT_REDACT_KEYS

A = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _s(n: int, alphabet: str = A) -> str:
    return "".join(alphabet[(i * 7 + 3) % len(alphabet)] for i in range(n))


_JWT = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                for part in ({"alg": "HS256", "typ": "JWT"},
                             {"sub": "1234567890", "name": "bob"})) + "." + _s(43)

# rule -> (the secret, a sentence carrying it)
CORPUS: dict[str, tuple[str, str]] = {
    "aws_access_key": ("AKIA" + "Z7XKQ2M4N6P3R5T8", "use key {} for s3"),
    "aws_temp_key": ("ASIA" + "Q4ZJ7N2M6K3P5R8T", "session creds {} expire soon"),
    "aws_secret_key": (_s(30) + "/K7MDENG+", "aws_secret_access_key = {}"),
    "gcp_api_key": ("AIza" + "Sy" + _s(33, A + "_-"), "maps key={}&q=x"),
    "azure_storage": (_s(86, A + "+/") + "==",
                      "DefaultEndpointsProtocol=https;AccountName=a;AccountKey={};"),
    "azure_sas": (_s(43, A) + "%3D", "https://a.blob.core.windows.net/c?sv=2022&sig={}"),
    "azure_client_secret": ("abc8Q~" + _s(34, A + "_~.-").replace(".", "x"),
                            "client secret value {}"),
    "stripe_live": ("sk_" + "live_" + _s(24), "charge with {}"),
    "stripe_test": ("sk_" + "test_" + _s(24), "charge with {}"),
    "stripe_restricted": ("rk_" + "live_" + _s(24), "restricted {}"),
    "stripe_webhook": ("whsec_" + _s(32), "verify with {}"),
    "github_classic": ("ghp_" + _s(36), "git clone https://x:{}@github.com/o/r"),
    "github_oauth": ("gho_" + _s(36), "token {}"),
    "github_fine_grained": ("github_pat_" + _s(22) + "_" + _s(59), "pat: {}"),
    "gitlab": ("glpat-" + _s(20), "CI uses {}"),
    "slack_bot": ("xoxb-" + "1234567890-1234567890123-" + _s(24), "slack {}"),
    "slack_user": ("xoxp-" + "1234567890-1234567890-" + _s(24), "slack {}"),
    "slack_webhook": ("hooks.slack.com/services/T0000" + "0000/B0000" + "0000/" + _s(24),
                      "post to https://{}"),
    "openai": ("sk-" + "proj-" + _s(48), "OPENAI {}"),
    "openai_legacy": ("sk-" + _s(20) + "T3BlbkFJ" + _s(20), "key {}"),
    "anthropic": ("sk-" + "ant-api03-" + _s(93, A + "_-") + "AA", "claude {}"),
    "jwt": (_JWT, "id_token {} from the IdP"),
    "bearer": ("Bearer " + _s(40, A + "._-"), "Authorization: {}"),
    "bearer_in_text": (_s(32, A + "._-"), "sent header bearer {} upstream"),
    "basic": ("Basic " + base64.b64encode(b"admin:hunter22").decode(), "Authorization: {}"),
    "basic_in_text": (base64.b64encode(b"svc:s3cr3t-pass").decode(), "curl -H 'basic {}'"),
    "url_credentials": ("admin:hunter2", "postgres://{}@db.internal:5432/app"),
    "url_credentials_amqp": ("guest:g0-away", "amqp://{}@mq:5672/"),
    "pem_rsa": ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + _s(60) + "\n-----END RSA PRIVATE"
                " KEY-----", "key:\n{}\n"),
    "pem_openssh_cut": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn" + _s(40),
                        "truncated {}"),
    "agentledger": (new_key(), "AGENTLEDGER_API_KEY={}"),
    "agentledger_bare": (new_key(), "the ledger key is {} (rotate it)"),
    "npm": ("npm_" + _s(36), "//registry.npmjs.org/:_authToken={}"),
    "pypi": ("pypi-AgEIcHlwaS5vcmc" + _s(60, A + "_-"), "twine password {}"),
    "sendgrid": ("SG." + _s(22) + "." + _s(43), "mail key {}"),
    "vault": ("hvs." + _s(90), "VAULT_TOKEN {}"),
    "password_assignment": ("Tr0ub4dor&3", "login with password=\"{}\""),
    "passwd_yaml": ("correct-horse", "passwd: {}"),
    "pwd_query": ("s3cret99", "https://host/login?user=bob&pwd={}&x=1"),
    "client_secret_json_text": ("cs-" + _s(20), '{{"client_secret": "{}"}}'),
    "x_api_key_header": ("k-" + _s(24), "X-Api-Key: {}"),
    "credentials_assignment": (_s(16), "credentials={}"),
}

# near-misses that must survive exactly
SAFE = [
    "tokens_in=1200 tokens_out=300 max_tokens=4096",
    "the bearer of bad news; basic information about the account",
    "refund order 12345 for bob@example.com, amount 40 USD",
    "https://example.com/path?x=1&page=2",
    "see https://docs.example.com/a:b (ratio 3:4)",
    "password: true",
    "risk_level=high, task_id=tsk_123",
    "Asia/Tokyo timezone, sk-short",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "uuid 0190b2a4-7c1e-7cc3-9a7b-3f1e2d4c5b6a",
    "total_amount=500 final_state=closed",
]


@pytest.mark.parametrize("rule", sorted(CORPUS))
def test_every_rule_of_the_corpus_is_redacted_in_free_text(rule: str):
    secret, template = CORPUS[rule]
    text = template.format(secret)
    out = redact_text(text)
    assert secret not in out, (rule, secret_rules(text), out)
    assert REDACTED in out
    # the same through the SDK's redactor, as a tool argument value and nested in a list
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    nested = redactor.redact({"note": text, "items": [text]})
    assert secret not in json.dumps(nested)


@pytest.mark.parametrize("text", SAFE)
def test_non_secrets_survive(text: str):
    assert redact_text(text) == text, secret_rules(text)
    assert Redactor(DEFAULT_REDACT_KEYS).redact({"note": text}) == {"note": text}


def test_key_name_variants_are_secret_and_near_misses_are_not():
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    secret_names = ["password", "Passwd", "pwd", "db_pass", "PASS", "credentials",
                    "Credential", "x-api-key", "X-API-KEY", "api-key", "apiKey", "auth",
                    "Auth-Token", "session", "sessionId", "private-key", "PRIVATE_KEY",
                    "client.secret", "refreshToken", "Set-Cookie", "connectionString",
                    "aws_secret_access_key", "AccessKey"]
    plain = ["passenger", "author", "authority_level", "compass", "user", "bypass_cache",
             "cwd", "id", "amount", "keyboard_layout", "email"]
    args = {name: "value-123" for name in secret_names + plain}
    out = redactor.redact(args)
    assert [n for n in secret_names if out[n] != REDACTED] == []
    assert [n for n in plain if out[n] != "value-123"] == []


def test_json_inside_a_string_is_parsed_and_redacted_inside():
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    payload = json.dumps({"user": "bob", "password": "x", "headers": {
        "Authorization": "Bearer " + _s(30), "Accept": "text/plain"},
        "nested": json.dumps({"api_key": "k", "page": 2})})
    out = redactor.redact({"body": payload})
    inner = json.loads(out["body"])
    assert inner["user"] == "bob" and inner["password"] == REDACTED
    assert inner["headers"] == {"Authorization": REDACTED, "Accept": "text/plain"}
    assert json.loads(inner["nested"]) == {"api_key": REDACTED, "page": 2}
    untouched = json.dumps({"page": 2, "q": "shoes"})
    assert redactor.redact({"body": untouched}) == {"body": untouched}  # kept byte for byte
