"""``agentledger control``: the control loop's state, ``explain`` and ``backtest``
(``backtest`` is also ``agentledger policy backtest``).

``explain`` reads the explanation each transition carries in ``control_signals``;
``backtest`` replays the stored tool results through a policy file with the worker's own
decision code (:mod:`agentledger.streams.backtest`) and sets what it would do beside what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import err, out, print_json
from agentledger.core.settings import Settings
from agentledger.schemas.signals import ControlSignal

_DECIDED = ("breaker", "safe_mode")

control_app = typer.Typer(help="Control-loop state (no subcommand), why a scope is in its "
                          "state (explain), and policy backtests.")



@control_app.command("explain")
def explain(
    scope: Annotated[str, typer.Argument(help="TENANT/AGENT (safe mode) or TENANT/*/TOOL "
                                              "(breaker), as `agentledger control` shows")],
    as_json: JsonFlag = False,
) -> None:
    """Why a scope is in its state: rule, window, calls and errors counted, bound and
    threshold, when it changed and the events that triggered it."""
    with connect.ledger() as ledger:
        found = ledger.get("/v1/control/explain", scope=scope)
    if as_json:
        print_json(found)
        return
    for st in found["states"]:
        name = f"{st['kind']}{':' + st['rule'] if st['rule'] else ''}"
        out.print(f"[bold]{found['scope']}[/bold] {name}: [bold]{st['state']}[/bold] since "
                  f"{st['since']} (version {st['version']}, policy {st['policy_version']})")
        out.print(f"  because: {st['reason']}", highlight=False)
        _print_explanation(out, st["explanation"], "  ")
        if st["triggered_by"]:
            out.print(f"  triggered by: {', '.join(st['triggered_by'][-5:])}", highlight=False)
        trip = st.get("last_trip")
        if trip and trip["version"] != st["version"]:
            out.print(f"  last tripped {trip['ts']} (version {trip['version']}): "
                      f"{trip['reason']}", highlight=False)
            _print_explanation(out, trip["explanation"], "    ")
            if trip["triggered_by"]:
                out.print(f"    triggered by: {', '.join(trip['triggered_by'][-5:])}",
                          highlight=False)
    out.print("history (newest first):")
    for h in found["history"]:
        out.print(f"  {h['ts']}  {h['kind']:9} v{h['version']:<3} {h['previous_state']} → "
                  f"{h['state']}: {h['reason']}", highlight=False)


def _print_explanation(out: Any, details: dict[str, Any], indent: str) -> None:
    keys = ("rule_kind", "window", "window_s", "calls", "errors", "error_rate", "threshold",
            "confidence", "lower_bound", "critical_errors", "min_calls", "exit_below",
            "min_hold_s", "recovered_below", "llr", "bound", "wait_s", "agent_time",
            "late_window",
            # the canary (streams/canary.py)
            "test", "baseline_version", "baseline_runs", "baseline_success",
            "candidate_runs", "candidate_success", "drop", "likelihood_ratio", "alpha",
            "mixture_sd", "margin")
    shown = [f"{k}={details[k]}" for k in keys if k in details]
    if shown:
        out.print(f"{indent}rule: {' '.join(shown)}", highlight=False)


@control_app.command("backtest")
def backtest(
    policy: Annotated[Path, typer.Argument(help="control policy YAML (current or candidate)")],
    since: Annotated[str, typer.Option(help="how far back: 7d, 24h, or an ISO time")] = "7d",
    until: Annotated[str | None, typer.Option(help="end of the history (default: now)")]
    = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    page: Annotated[int, typer.Option(min=1000, max=200_000, help="results per request")]
    = 50_000,
    as_json: JsonFlag = False,
) -> None:
    """Run a control policy over the stored tool results (event-time order) with the
    stream worker's own decision code; print the transitions it would make beside the
    ones that were made."""
    from rich.progress import Progress

    from agentledger.streams.control_policy import load_policy

    loaded = load_policy(policy)
    with connect.ledger() as ledger, Progress(console=err, transient=True,
                                           disable=as_json) as progress:
        task = progress.add_task("replaying tool results", total=None)
        report = run_backtest(ledger, loaded, since=since, until=until, tenant=tenant,
                              page=page, progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json(report)
        return
    _print_backtest(report)


def run_backtest(ledger: Any, policy: Any, *, since: str | None, until: str | None = None,
                 tenant: str | None = None, page: int = 50_000,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Page the tool results through a :class:`~agentledger.streams.backtest.Backtest` and
    compare its transitions with the stored ones. ``ledger`` is a :class:`LedgerClient`."""
    from agentledger.streams.backtest import Backtest, compare, episodes, transition_key

    run = Backtest(policy)
    started = time.perf_counter()
    after: dict[str, Any] = {}
    while True:
        got = ledger.get("/v1/control/results", since=since, until=until, tenant=tenant,
                         limit=page, **after)
        rows = got["results"]
        run.feed(rows)
        if progress:
            progress(len(rows))
        if not got["more"] or not rows:
            break
        after = {"after_us": rows[-1][0], "after_id": rows[-1][6]}
    would = run.finish()
    replayed = time.perf_counter() - started
    made = ledger.get("/v1/control/history", since=since, until=until, tenant=tenant,
                      limit=10_000)["signals"]
    would_keys = [transition_key(s.kind, s.scope, s.rule, s.version, s.previous_state,
                                 s.state) for s in would if s.kind in _DECIDED]
    made_keys = [transition_key(m["kind"], m["scope"], m["rule"], m["version"],
                                m["previous_state"], m["state"])
                 for m in sorted(made, key=lambda m: (m["ts"], m["version"]))
                 if m["kind"] in _DECIDED]
    diff = compare(would_keys, made_keys)
    would_eps, made_eps = episodes(would_keys), episodes(made_keys)
    episode_diff = [{"kind": k[0], "scope": k[1], "rule": k[2],
                     "would": would_eps.get(k, []), "made": made_eps.get(k, [])}
                    for k in sorted(set(would_eps) | set(made_eps))
                    if would_eps.get(k) != made_eps.get(k)]
    return {"policy_version": policy.version, "results": run.results,
            "runs_finished": run.runs_finished,
            "seconds": round(replayed, 2), "would": [list(k) for k in would_keys],
            "made": [list(k) for k in made_keys], "same": len(diff["same"]),
            "only_backtest": [list(k) for k in diff["only_backtest"]],
            "only_made": [list(k) for k in diff["only_made"]],
            "episodes_same": sum(1 for k in would_eps if would_eps[k] == made_eps.get(k)),
            "episodes_differ": episode_diff,
            "late_events": run.controller.clocks.late_events}


def _print_backtest(report: dict[str, Any]) -> None:
    from rich.table import Table

    out.print(f"policy {report['policy_version']}: {report['results']} tool results replayed "
              f"in {report['seconds']}s; {report['same']} transitions as made, "
              f"{len(report['only_backtest'])} only in the backtest, "
              f"{len(report['only_made'])} only made; episodes (trips and recoveries, "
              f"probe cycles aside): {report['episodes_same']} scopes the same, "
              f"{len(report['episodes_differ'])} differ", highlight=False)
    would, made = report["would"], report["made"]
    table = Table(title="transitions: would make | were made", title_justify="left")
    for column in ("kind", "scope", "rule", "version", "would make", "were made"):
        table.add_column(column)
    made_set = {tuple(m) for m in made}
    would_set = {tuple(w) for w in would}
    for key in list(dict.fromkeys(tuple(k) for k in would + made)):
        kind, scope, rule, version, previous, state = key
        move = f"{previous} → {state}"
        table.add_row(kind, scope, rule, str(version), move if key in would_set else "",
                      move if key in made_set else "")
    out.print(table)


def _read_control(settings: Settings, timeout_s: float = 3.0) -> Any:
    from agentledger.producers.guard import ControlFollower

    follower = ControlFollower(connect.bootstrap(settings),
                               security=settings.kafka_security).start()
    # the compacted topic is small: read until it has been quiet for a moment
    follower.wait_for(lambda: bool(follower.last_heard) and follower.silent_for > 0.5,
                      timeout_s)
    follower.close()
    return follower


def _lag_fields(signal: ControlSignal) -> dict[str, Any]:
    """A worker heartbeat's progress: events read and how old the newest of them was."""
    if signal.kind != "heartbeat":
        return {}
    return {"events": signal.details.get("events"), "lag_s": signal.details.get("lag_s")}


def _worker_lag(signal: ControlSignal) -> str:
    fields = _lag_fields(signal)
    if fields["lag_s"] is None:
        return "no events read yet"
    return f"{fields['events']:,} events read; newest {fields['lag_s']:.1f}s old when read"


@control_app.callback(invoke_without_command=True)
def control(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array of scopes")] = False,
    heartbeats: Annotated[bool, typer.Option(help="also list stream worker heartbeats")]
    = False,
) -> None:
    """Current state of every scope on agent.control: breakers, safe modes, budgets,
    overrides (and, with --heartbeats, the stream workers)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = connect.settings()
    follower = _read_control(settings)
    signals = sorted(follower.state.values(), key=lambda s: (s.kind, s.scope, s.rule))
    if heartbeats:
        signals += sorted(follower.heartbeats.values(), key=lambda s: s.scope)
    rows = [{"kind": s.kind, "scope": s.scope, "rule": s.rule, "state": s.state,
             "version": s.version, "since": s.ts.isoformat(),
             "reason": _worker_lag(s) if s.kind == "heartbeat" else s.reason,
             "policy_version": s.policy_version, "fallback": s.fallback,
             "triggered_by": s.triggered_by, **_lag_fields(s)} for s in signals]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no control state yet (is `agentledger streams` running?)", highlight=False)
        return
    table = Table(title="control state", title_justify="left")
    for column in ("kind", "scope", "rule", "state", "version", "since", "reason"):
        table.add_column(column, justify="right" if column == "version" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("kind", "scope", "rule", "state", "version",
                                               "since", "reason")))
    out.print(table)
