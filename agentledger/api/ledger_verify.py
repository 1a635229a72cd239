"""``POST /v1/ledger/verify``: recompute every log's Merkle tree from the stored events and
hold it to every signed head (:mod:`agentledger.queries.ledger_verify`). Operator keys
only: the answer is about every tenant's events.

The witness stays with the verifier: the CLI sends only the witnessed *heads* (small, and
signed, so the API cannot pass off its own) and the witness's public keys; it compares
the store's leaves returned around the first failing head with the witness's leaves
itself. A POST, as it runs a check over the whole store."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agentledger.api.deps import Operator, Store, settings_of
from agentledger.api.responses import OrjsonResponse
from agentledger.core import signing
from agentledger.queries import ledger_verify as q
from agentledger.queries.common import parse_time

router = APIRouter(default_response_class=OrjsonResponse, tags=["operations"])

Hex = Annotated[str, Field(max_length=256, pattern=r"^[0-9A-Za-z_=+/-]*$")]


class WitnessHead(BaseModel):
    log_id: str = Field(max_length=300, pattern=r"^[A-Za-z0-9._-]+/[0-9]+$")
    tree_size: int = Field(ge=0)
    root_hash: Hex
    issued_at_ms: int = Field(ge=0)
    key_id: Hex
    signature: Hex


class LedgerVerifyRequest(BaseModel):
    since: str | None = Field(default=None, max_length=64,
                              description="check heads issued from: 7d, 24h, an ISO "
                                          "date/datetime (and the last one before)")
    witness_heads: list[WitnessHead] = Field(default_factory=list, max_length=1_000_000)
    public_keys: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=100,
        description="more trusted ledger public keys (the witness's keys.json)")


def _keyring(request: Request, extra: list[str]) -> signing.Keyring:
    """The ledger keys this API knows (current and rotated-out), and ``extra``."""
    settings = settings_of(request.app)
    ring = signing.Keyring.parse(settings.ledger_public_key.split(","))
    directory = signing.key_dir(settings)
    if directory.is_dir():
        for kid, public in signing.local_keyring(directory).keys.items():
            ring.keys[kid] = public
        own = signing.load_key(directory)
        if own is not None:
            ring.add(own.public)
    try:
        for text in extra:
            ring.add(signing.public_from_text(text))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return ring


def _run(request: Request, client: Any, body: LedgerVerifyRequest) -> dict[str, Any]:
    since = parse_time(body.since)
    heads = [q.Head(h.log_id, h.tree_size, h.root_hash, h.issued_at_ms, h.key_id,
                    h.signature, "witness") for h in body.witness_heads]
    return q.verify_ledger(client, _keyring(request, body.public_keys), heads,
                           since_ms=None if since is None else int(since.timestamp() * 1000))


@router.post("/v1/ledger/verify", summary="recompute every log's Merkle tree from the "
                                          "store and check it against every signed head "
                                          "(operator key)")
async def verify_ledger(body: LedgerVerifyRequest, request: Request, who: Operator,
                        client: Store) -> Any:
    return await run_in_threadpool(_run, request, client, body)
