"""``agentledger policy``: check, test and diff tool-gating policies (Cedar + catalog).

``policy test`` runs a policy against a table of cases kept in the repository;
``policy diff`` replays the tool calls recorded in the ledger through two policies and
lists the decisions that would change, before a new policy ships.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, out, print_json, table

tool_policy_app = typer.Typer(help="Tool policy (Cedar gating of tool calls): check, test "
                                   "against cases, diff on recorded calls.",
                              no_args_is_help=True)

PolicyDir = Annotated[Path | None, typer.Option(
    "--policy", help="policy directory (catalog.yaml + *.cedar); default: the packaged one")]



def _gate(directory: Path | None) -> Any:
    from agentledger.producers.gate import Gate, PolicyError

    try:
        return Gate.load(directory)
    except PolicyError as exc:
        raise UserError(f"policy refused: {exc}") from None


@tool_policy_app.command("check")
def policy_check(
    directory: Annotated[Path | None, typer.Argument(help="policy directory")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Load and validate a policy (Cedar syntax, schema from the catalog, annotations);
    a broken file is reported with its file, line and reason."""
    gate = _gate(directory)
    done = {"policy_id": gate.policy_id, "version": gate.version, "source": str(gate.source),
            "actions": len(gate.catalog.actions), "agents": len(gate.catalog.agents)}
    if as_json:
        print_json(done)
    else:
        out.print(f"policy {gate.policy_id} {gate.version}: ok ({done['actions']} "
                         f"actions, {done['agents']} agents)", highlight=False)


@tool_policy_app.command("test")
def policy_test(
    cases: Annotated[Path | None, typer.Argument(
        help="cases YAML; default: cases.yaml of the policy directory")] = None,
    policy: PolicyDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the policy against a table of cases (principal, action, args → expected
    decision and rule); exits 1 if any case fails."""
    from agentledger.producers.gate import PolicyError
    from agentledger.producers.tool_policy_cases import load_cases, run_cases

    gate = _gate(policy)
    path = cases or gate.source / "cases.yaml"
    try:
        results = run_cases(gate, load_cases(path))
    except PolicyError as exc:
        raise UserError(str(exc)) from None
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json({"policy_version": gate.version, "cases": len(results),
                         "failed": len(failed), "results": [r.as_dict() for r in results]})
    else:
        shown = [{"case": r.name, "expect": r.expect, "got": r.got.decision,
                  "rule": r.got.rule, "ok": "ok" if r.ok else f"FAIL: {r.why}"}
                 for r in results]
        table(shown, list(shown[0]), title=f"policy {gate.version}: {path}")
        out.print(f"{len(results) - len(failed)}/{len(results)} cases pass",
                      highlight=False)
    if failed:
        raise typer.Exit(1)


@tool_policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="the current policy directory")],
    new: Annotated[Path, typer.Argument(help="the proposed policy directory")],
    since: Annotated[str, typer.Option(help="replay calls since: 7d, 24h, ISO date")] = "7d",
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many recorded calls")]
    = 100_000,
    as_json: JsonFlag = False,
) -> None:
    """Replay the tool calls recorded in the ledger through OLD and NEW and list every
    call whose decision (or deciding rule) would change."""
    from agentledger.producers.tool_policy_cases import call_of, diff

    a, b = _gate(old), _gate(new)
    calls: list[dict[str, Any]] = []
    with connect.ledger() as ledger:
        cursor = None
        while len(calls) < limit:
            page = ledger.get("/v1/events", event_type="tool.call", include_body=True,
                              since=since, tenant=tenant, limit=1000, cursor=cursor)
            calls += [{**call_of(e), "event_id": e["event_id"], "ts": e["ts"]}
                      for e in page["events"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    changed = diff(a, b, calls[:limit])
    if as_json:
        print_json({"old": a.version, "new": b.version, "replayed": len(calls[:limit]),
                         "changed": changed})
        return
    out.print(f"replayed {len(calls[:limit])} recorded tool calls: {len(changed)} "
                  f"decisions change from {a.version} to {b.version}", highlight=False)
    if changed:
        shown = [{"ts": str(c["ts"])[:19], "principal": c["principal"], "action": c["action"],
                  "args": str(c["args"])[:40], "old": f"{c['old']} ({c['old_rule']})",
                  "new": f"{c['new']} ({c['new_rule']})"} for c in changed[:200]]
        table(shown, list(shown[0]), title="decisions that would change")


@tool_policy_app.command("matrix")
def policy_matrix(
    tenant: Annotated[str | None, typer.Option(
        help="the tenant whose agents to show; default: the catalog's first")] = None,
    policy: PolicyDir = None,
    as_json: JsonFlag = False,
) -> None:
    """What each agent may do: agents x tool actions → allow, deny or N approvals of a
    role, each with the Cedar rule that decides it and its argument conditions (e.g.
    "201 ≤ amount ≤ 800: 2 x finance"), evaluated from the policy itself; who holds each
    approver role (from the keys file); the policy version and its diff from the
    previous one recorded. The same answer as GET /v1/permissions."""
    from agentledger.auth import KeyConfigError, KeyRing, load_entries
    from agentledger.core.settings import load_settings
    from agentledger.queries import permissions
    from agentledger.queries.common import ALL

    gate = _gate(policy)
    settings = load_settings()
    try:
        entries = load_entries(settings)
    except KeyConfigError as exc:
        raise UserError(str(exc)) from None
    found = permissions.view(gate, ALL, tenant, KeyRing(entries).principals(),
                             settings.data_dir)
    if as_json:
        print_json(found)
        return
    version = found["version"]
    out.print(f"policy {gate.policy_id} {gate.version} (previous: "
              f"{version['previous'] or 'none recorded'}), tenant {found['tenant']}",
              highlight=False)
    for agent in found["agents"]:
        shown = [{"tool:action": f"{c['tool']}:{c['action']}", "mode": c["mode"],
                  "decision": c["decision"], "conditions": c["summary"]}
                 for c in agent["cells"] if c["decision"] != "deny" or c["rules"] != [
                     "default-deny"]]
        table(shown, ["tool:action", "mode", "decision", "conditions"],
              title=f"{agent['agent']} (roles: {', '.join(agent['roles'])}); "
                    "actions not listed: deny (default-deny)")
    roles = [{"role": r["role"], "holders": ", ".join(h["name"] for h in r["holders"])
              or "nobody"} for r in found["roles"]]
    table(roles, ["role", "holders"], title="approver roles")


def legacy_policy_app(backtest: Callable[..., None]) -> typer.Typer:
    """``agentledger policy``: the old name of ``tool-policy``, hidden from ``--help``.

    It also keeps ``policy backtest``, which always ran the control policy's backtest
    (now ``control backtest``), for the scripts that call it."""
    legacy = typer.Typer(help="Old name of `tool-policy` (and of `control backtest`).",
                         no_args_is_help=True)
    legacy.command("check")(policy_check)
    legacy.command("test")(policy_test)
    legacy.command("diff")(policy_diff)
    legacy.command("backtest")(backtest)
    return legacy
