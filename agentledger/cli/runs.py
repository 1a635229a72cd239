"""Runs and events: ``search``, ``trace`` (a run's timeline), ``replay`` (its bundle) and
``verify`` (its hash chain)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, SinceOpt, TenantOpt, UntilOpt
from agentledger.cli.render import UserError, err, out, print_json, table


def search(
    tenant: TenantOpt = None,
    agent: Annotated[str | None, typer.Option(help="agent name")] = None,
    tool: Annotated[str | None, typer.Option(help="tool name")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="e.g. tool.result")] = None,
    status: Annotated[str | None, typer.Option(help="ok, error, timeout, rejected")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="success, failure, aborted, rolled_back")] = None,
    trace: Annotated[str | None, typer.Option(help="trace id (32 hex)")] = None,
    run: Annotated[str | None, typer.Option(help="run id")] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow name")] = None,
    text: Annotated[str | None, typer.Option(help="text in errors (case-insensitive)")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="events per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
    oldest_first: Annotated[bool, typer.Option(help="sort oldest first")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search events by tenant, agent, tool, type, status, outcome, ids, error text, time.

    Newest first; prints a cursor for the next page.
    """
    with connect.ledger() as ledger:
        page = ledger.get("/v1/events", tenant=tenant, agent=agent, tool=tool,
                          event_type=event_type, status=status, outcome=outcome,
                          trace_id=trace, run_id=run, workflow=workflow, q=text, since=since,
                          until=until, limit=limit, cursor=cursor,
                          order="asc" if oldest_first else "desc")
    if as_json:
        print_json(page)
        return
    table(page["events"], ["ts", "tenant", "agent", "event_type", "tool", "status",
                            "outcome", "error_type", "cost_usd", "latency_ms", "run_id"],
           title="events", empty="no events match")
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def trace(
    ref: Annotated[str, typer.Argument(help="a trace id or a run id")],
    as_json: JsonFlag = False,
) -> None:
    """The timeline of a run (or every run of a trace): inputs, retrieval, model calls,
    tool calls, policy decisions and approvals, outcome — with latencies and costs."""
    with connect.ledger() as ledger:
        found = ledger.get(f"/v1/timeline/{_ref(ref)}")
    if as_json:
        print_json(found)
        return
    for run in found["runs"]:
        out.print(f"[bold]run {run['run_id']}[/] {run['tenant']}/{run['agent']} "
                  f"{run['workflow'] or '?'} → {run['outcome'] or 'unfinished'}  "
                  f"trace {run['trace_id']}  cost ${run['cost_usd']:.6f}  "
                  f"{run['duration_ms']:.0f} ms", highlight=False)
        table(run["steps"], ["seq", "offset_ms", "phase", "what", "latency_ms", "cost_usd"])


def _ref(ref: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}", ref):
        raise UserError(f"not a run or trace id: {ref!r}")
    return ref


def replay(
    ref: Annotated[str, typer.Argument(help="a run id or a trace id")],
    output: Annotated[str, typer.Option("--output", "-o", help="file to write ('-' = stdout)")],
) -> None:
    """Write the replay bundle of a run (or of every run of a trace) as one JSON document:
    ordered events, input hash and reference, retrieved document hashes and index version,
    tool schema hashes and versions, models, prompt and policy versions, verification.

    Exits 1 when the stored chain does not verify (the bundle is written anyway).
    """
    with connect.ledger() as ledger:
        bundle = ledger.get(f"/v1/replay/{_ref(ref)}")
    text = json.dumps(bundle, indent=2, default=str) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w") as handle:
            handle.write(text)
        runs = bundle["runs"]
        err.print(f"wrote {output}: {len(runs)} run(s), "
                  f"{sum(len(r['events']) for r in runs)} events, chain "
                  f"{'verified' if bundle['verified'] else 'BROKEN'}", highlight=False)
    if not bundle["verified"]:
        raise typer.Exit(1)


def verify(
    ref: Annotated[str | None, typer.Argument(help="a run id or a trace id")] = None,
    ledger_wide: Annotated[bool, typer.Option(
        "--ledger", help="verify the whole ledger: every log's Merkle tree against every "
                         "signed head (operator key)")] = False,
    witness: Annotated[Path | None, typer.Option(
        help="a witness copy (`agentledger checkpoints export DIR`) to hold the store to; "
             "with --ledger")] = None,
    since: SinceOpt = None,
    public_key: Annotated[list[str] | None, typer.Option(
        "--public-key", help="a trusted ledger public key (base64 or a .pub file); "
                             "repeatable; with --ledger")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify the stored hash chain of a run (or every run of a trace), or with --ledger
    the whole ledger.

    A run: detects modified, deleted, inserted and reordered events and columns edited in
    place; exits 1 and names the first broken link.

    --ledger: recomputes every log's Merkle tree (one per agent.events partition) from the
    stored events and checks it against every signed head in the store and, with
    --witness, in the witness copy: the same root at that size, consistent successive
    heads, every head signed by a known ledger key. A whole run deleted, rewritten with a
    recomputed chain, truncated, forged, two events swapped or an older snapshot restored
    all change a root; with a witness the first differing leaf is named (log, index,
    event, run, and whether it was deleted, inserted, altered or reordered). --since
    checks only the heads issued since then (the tree is still recomputed whole). Exits 0
    with a one-line summary when intact, 1 otherwise.
    """
    if ledger_wide:
        if ref is not None:
            raise UserError("give a run id or --ledger, not both")
        _verify_ledger(witness, since, public_key or [], as_json)
        return
    if ref is None:
        raise UserError("give a run id or trace id, or --ledger")
    if witness is not None or public_key or since is not None:
        raise UserError("--witness, --public-key and --since go with --ledger")
    with connect.ledger() as ledger:
        result = ledger.get(f"/v1/verify/{_ref(ref)}")
    if as_json:
        print_json(result)
    else:
        for run in result["runs"]:
            if run["ok"]:
                out.print(f"run {run['run_id']}: ok, {run['events']} events chained"
                          f"{'' if run.get('complete') else ' (run not finished)'}",
                          highlight=False)
                if run.get("custody"):
                    out.print(f"  custody from {run['custody']}", highlight=False)
                if run.get("inclusion"):
                    out.print(f"  {_inclusion_line(run['inclusion'])}", highlight=False,
                              markup=False)
            else:
                out.print(f"run {run['run_id']}: BROKEN at seq {run['broken_seq']} "
                          f"(event {run['broken_event_id']}): {run['problem']}",
                          highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


def _inclusion_line(proof: dict[str, Any]) -> str:
    status = proof.get("status")
    if status == "included":
        return (f"in the signed head of {proof['log_id']} at size {proof['tree_size']:,} "
                f"(leaf {proof['leaf_index']:,}, {len(proof['proof'])} proof hashes)")
    if status == "pending":
        return f"landed after the latest signed head of {proof['log_id']} (covered soon)"
    if status == "unavailable":
        return f"no signed head for {proof.get('log_id')} yet (checkpoints off?)"
    return f"NOT a leaf of {proof.get('log_id')}'s tree recomputed from the store"


def verify_bundle(
    bundle_file: Annotated[Path, typer.Argument(help="a replay bundle (agentledger replay)")],
    public_key: Annotated[list[str], typer.Option(
        "--public-key", help="a trusted ledger public key (base64, or a ledger.pub file); "
                             "repeatable")],
    as_json: JsonFlag = False,
) -> None:
    """Check a replay bundle offline, with the ledger's public key alone: each run's hash
    chain, its last event in the bundle's inclusion proof, the proof up to the signed
    head's root, and the head's signature. Needs no ledger. Exits 1 if any fails."""
    from agentledger.core import offline, signing

    try:
        keyring = signing.Keyring.parse(public_key)
        bundle = json.loads(bundle_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{bundle_file}: {exc}") from None
    if not keyring:
        raise UserError("give the ledger's public key with --public-key")
    if not isinstance(bundle, dict):
        raise UserError(f"{bundle_file}: not a replay bundle")
    problems = offline.check_bundle(bundle, keyring)
    if as_json:
        print_json({"ok": not problems, "runs": len(bundle.get("runs") or []),
                    "problems": problems})
    elif problems:
        for line in problems:
            out.print(f"BROKEN: {line}", highlight=False, markup=False)
    else:
        out.print(f"bundle ok: {len(bundle['runs'])} run(s) chained and in signed heads",
                  highlight=False, markup=False)
    if problems:
        raise typer.Exit(1)


def _verify_ledger(witness_dir: Path | None, since: str | None, public_keys: list[str],
                   as_json: bool) -> None:
    """The CLI half of ``verify --ledger``: the witness is read and checked here, only its
    signed heads and public keys go to the API, and differences are named here."""
    from agentledger.core import signing
    from agentledger.queries import witness as wv

    try:
        keyring = signing.Keyring.parse(public_keys)
        found = wv.read_witness(witness_dir) if witness_dir is not None else wv.Witness()
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
    for kid, public in keyring.keys.items():
        found.keyring.keys[kid] = public
    witness_problems = wv.check_witness(found) if witness_dir is not None else []
    heads = wv.heads_to_send(found)
    with connect.ledger() as ledger:
        report = ledger.post("/v1/ledger/verify", {
            "since": since, "witness_heads": [
                {k: v for k, v in h.to_dict().items() if k != "source"} for h in heads],
            "public_keys": wv.public_texts(found.keyring)})
    named = []
    for log in report["logs"]:
        if "store_window" in log and log["log_id"] in found.leaves:
            difference = wv.name_difference(log["log_id"], log.pop("store_window"),
                                            found.leaves[log["log_id"]], log["window"]["lo"])
            if difference is not None:
                log["first_difference"] = difference
                named.append(difference)
        log.pop("store_window", None)
    report["witness"] = None if witness_dir is None else {
        "dir": str(witness_dir), "heads": sum(len(h) for h in found.heads.values()),
        "leaves": sum(len(v) for v in found.leaves.values()), "problems": witness_problems}
    report["problems"] = [*witness_problems, *report["problems"]]
    report["ok"] = report["ok"] and not witness_problems
    report["first_difference"] = named[0] if named else None
    if as_json:
        print_json(report)
    elif report["ok"]:
        out.print(f"ledger ok: {report['leaves']:,} leaves in {len(report['logs'])} log(s), "
                  f"{report['heads']:,} signed heads hold"
                  f"{' (witness included)' if witness_dir else ''}, "
                  f"{report['uncovered']:,} landed since the latest head "
                  f"({report['seconds']:.1f} s)", highlight=False, markup=False)
        if report["leaves"] and not report["heads"]:
            err.print("warning: no signed head covers any leaf, so nothing is proven yet "
                      "(checkpoints_enabled off, or the sink has not signed one)",
                      highlight=False, markup=False)
    else:
        out.print(f"ledger BROKEN: {len(report['problems'])} problem(s)", highlight=False,
                  markup=False)
        for difference in named:
            out.print(f"first difference: {wv.describe(difference)}", highlight=False,
                      markup=False)
        for line in report["problems"]:
            out.print(f"  {line}", highlight=False, markup=False)
    if not report["ok"]:
        raise typer.Exit(1)
