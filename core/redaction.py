"""Redaction of secrets from tool arguments, before anything leaves the agent.

Two nets, both applied at any depth of dicts and lists:

- **By key name.** A key is secret when its name, lowercased and with ``-``, ``_``, ``.``
  and spaces dropped, contains a configured word of five letters or more ("password"
  covers ``db_password``, "apikey" covers ``X-Api-Key``), or has a shorter configured word
  ("pwd", "pass", "auth") as one whole part (``db_pass``, ``authToken``, not
  ``passenger`` or ``author``). Decisions are cached per name: the same argument names
  come back on every call.
- **By value shape.** Strings are scanned for the formats secret scanners (gitleaks,
  detect-secrets) look for: cloud and payment provider keys, source-host and chat tokens,
  LLM provider keys, JWTs, ``Basic``/``Bearer`` credentials, credentials in URLs, PEM
  private keys, the ledger's own ``al_`` keys, and ``name=value`` pairs whose name is a
  secret word. A string that holds a JSON object or array is parsed and redacted inside
  (then written back compactly), because tool arguments often carry a serialised payload.

Why hand-written patterns and not a scanner library: detect-secrets (the maintained
Python one) scans files line by line through a plugin registry held in global settings,
reports the secret's value rather than its span, and has no rule for Bearer values, the
ledger's ``al_`` keys, GCP API keys or key-name normalisation; running its ~25 plugins
per string would also cost the SDK's hot path far more than one compiled alternation.
The rules below follow gitleaks' rule set in kind (same prefixes and lengths); the corpus
in ``tests/security/test_redaction_corpus.py`` holds one realistic fake per rule and
the non-secrets that must survive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "[REDACTED]"

_SHORT_WORD = 4
"""Configured words this long or shorter match a whole part of a key name only."""

# A secret word in free text followed by = or :, then the value (the value is replaced,
# the name kept so the reader sees what was there).
_SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret(?:[_.-]?access)?(?:[_.-]?key)?|"
    r"access[_.-]?key(?:[_.-]?id)?|api[_.-]?key|apikey|(?:auth|access|refresh|id)[_.-]?token|"
    r"token|client[_.-]?secret|private[_.-]?key|credentials?|authorization|session[_.-]?id"
)

_AWS_PREFIXES = ("a3t", "akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva",
                 "aipa")

# (name, lowercase literals one of which every match contains, pattern)
_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # PEM private keys (RSA, EC, DSA, OPENSSH, PGP, ENCRYPTED...), to the END line or, if
    # the text was cut, to the end of the string.
    ("pem", ("-----begin",),
     r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
     r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)"),
    # scheme://user:password@host: the userinfo goes, scheme and host stay.
    ("url_creds", ("://",), r"(?<=://)[^\s/:@\"'<>]{1,256}:[^\s/@\"'<>]{1,256}(?=@)"),
    # JWT / JWS / JWE: base64url JSON header and payload.
    ("jwt", ("eyj",), r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Authorization values; letters alone count only when long ("the bearer of news").
    ("bearer", ("bearer",),
     r"(?i:\bbearer)\s+(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-]|[A-Za-z]{16})[A-Za-z0-9._~+/=-]{8,}"),
    ("basic", ("basic",),
     r"\b(?i:basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=]|[A-Za-z]{16})[A-Za-z0-9+/]{8,}={0,2}"),
    # AWS access key ids (AKIA long-term, ASIA temporary, ...).
    ("aws_access_key", _AWS_PREFIXES,
     r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    # GCP / Firebase API keys.
    ("gcp_api_key", ("aiza",), r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    # Azure: storage and service-bus keys and SAS signatures in connection strings and
    # URLs; Entra ID (AD) client secrets.
    ("azure_conn", ("accountkey=", "sharedaccesskey=", "sig="),
     r"(?i:(?<=AccountKey=)|(?<=SharedAccessKey=)|(?<=[?&]sig=))[A-Za-z0-9+/%]{20,}={0,2}"),
    ("azure_client_secret", ("q~",),
     r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])"),
    # Stripe secret and restricted keys, webhook secrets.
    ("stripe", ("sk_", "rk_"), r"\b(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,247}\b"),
    ("stripe_webhook", ("whsec_",), r"\bwhsec_[0-9A-Za-z]{24,}\b"),
    # GitHub classic and fine-grained tokens; GitLab personal tokens.
    ("github", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{20,255}\b"),
    ("github_pat", ("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    ("gitlab", ("glpat-",), r"\bglpat-[A-Za-z0-9_-]{20,}"),
    # Slack tokens and webhooks.
    ("slack", ("xox",), r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    ("slack_app", ("xapp-",), r"\bxapp-\d-[A-Za-z0-9-]{10,}"),
    ("slack_webhook", ("hooks.slack",),
     r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}"),
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), other dash-style keys.
    ("llm_key", ("sk-", "pk-", "rk-"), r"(?<![A-Za-z0-9_-])(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"),
    # The ledger's own API keys: "al_" + 43 url-safe characters.
    ("agentledger", ("al_",), r"(?<![A-Za-z0-9_-])al_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    # Other common registries and vaults.
    ("npm", ("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("pypi", ("pypi-",), r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    ("sendgrid", ("sg.",), r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
    ("vault", ("hvs.", "hvb."), r"\bhv[sb]\.[A-Za-z0-9_-]{24,}"),
    # name=value, name: value, "name": "value" where the name is a secret word (after
    # any prefix: aws_secret_access_key); a Bearer/Basic scheme goes with the value.
    ("assignment",
     ("pass", "pwd", "secret", "key", "token", "credential", "authorization", "session"),
     r"(?i:(?:(?<=[_.-])|(?<![A-Za-z0-9]))(?:" + _SECRET_WORDS + r"))"
     r"(?![A-Za-z0-9])[\"']?\s*[:=]\s*[\"']?"
     r"(?!(?i:true|false|null|none|\*+|\[REDACTED\])(?![^\s\"',;&}]))"
     r"(?P<secret_value>(?:(?i:bearer|basic)\s+)?[^\s\"',;&}<>]{3,})"),
)
_COMPILED: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (name, triggers, re.compile(rule)) for name, triggers, rule in _RULES)
_TRIGGERS: tuple[tuple[str, int], ...] = tuple(
    (trigger, i) for i, (_, triggers, _) in enumerate(_COMPILED) for trigger in triggers)
_SHORTEST = 7
"""No rule matches fewer characters ("pwd=abc"): shorter strings are not scanned."""
_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _sub(match: re.Match[str]) -> str:
    if match.lastgroup == "secret_value":  # keep "password=" so the reader sees what it was
        return match.group()[:match.start("secret_value") - match.start()] + REDACTED
    return REDACTED


def _normalised(name: str) -> str:
    return re.sub(r"[\s_.-]+", "", name.lower())


def redact_text(text: str) -> str:
    """``text`` with every secret-shaped value replaced by ``[REDACTED]``.

    Each rule has literal triggers (lowercase) that any match must contain; a rule runs
    only when one of its triggers is in the text. Plain text (most arguments) then costs
    a lowercase copy and a few substring tests, not a regular-expression scan per rule.
    """
    if len(text) < _SHORTEST:
        return text
    low = text.lower()
    hits = {i for trigger, i in _TRIGGERS if trigger in low}
    for i in sorted(hits):  # in table order: PEM and URLs first, name=value last
        text = _COMPILED[i][2].sub(_sub, text)
    return text


def secret_rules(text: str) -> list[str]:
    """The names of the rules that fire on ``text`` (for tests and audits)."""
    return [name for name, _, pattern in _COMPILED if pattern.search(text)]


class Redactor:
    """Redacts by key name and by value shape; see the module docstring."""

    def __init__(self, keys: Iterable[str]):
        words = {_normalised(k) for k in keys if k and _normalised(k)}
        self._long = tuple(sorted(w for w in words if len(w) > _SHORT_WORD))
        self._short = frozenset(w for w in words if len(w) <= _SHORT_WORD)
        self._cache: dict[str, bool] = {}

    def _secret_key(self, key: str) -> bool:
        found = self._cache.get(key)
        if found is None:
            flat = _normalised(key)
            found = any(word in flat for word in self._long) or (
                bool(self._short) and (flat in self._short or any(
                    part.lower() in self._short for part in _PARTS.findall(key))))
            if len(self._cache) >= 4096:  # argument names repeat; a flood must not grow it
                self._cache.clear()
            self._cache[key] = found
        return found

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secret keys and secret-shaped strings replaced."""
        if isinstance(value, dict):
            return {
                k: (REDACTED if self._secret_key(str(k)) else self.redact(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        if isinstance(value, str):
            return self._redact_str(value)
        return value

    def _redact_str(self, text: str) -> str:
        stripped = text.strip()
        if len(stripped) > 1 and stripped[0] in "{[" and stripped[-1] in "}]":
            try:
                inner = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(inner, dict | list):
                    redacted = self.redact(inner)
                    return orjson.dumps(redacted).decode() if redacted != inner else text
        return redact_text(text)
