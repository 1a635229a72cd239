"""``agentledger gate``: did this agent version, prompt or model make things worse?

Reads through the API (``GET /v1/gate``) like every query command, so it works while
``agentledger up`` owns the embedded store. The exit code is the verdict, for CI:
0 pass, 1 marginal, 2 fail, 3 insufficient data, 4 the gate could not run (bad cohort or
config, API unreachable). Click's own usage errors (an unknown option) exit 2 as well:
CI should treat anything but 0 as "do not ship".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, TenantOpt, UntilOpt
from agentledger.cli.render import known_errors, out, print_error, print_json, table

COULD_NOT_RUN = 4


def _config_text(path: Path | None) -> str | None:
    if path is None:
        return None
    from agentledger.streams.release_gate import parse_config

    try:
        text = path.read_text()
    except OSError as exc:
        raise RuntimeError(f"cannot read {path}: {exc.strerror or exc}") from None
    parse_config(text, str(path))  # a bad file is named here, before any request
    return text


def _fmt(metric: dict[str, Any], key: str) -> str:
    value = metric[key]
    if value is None:
        return ""
    if metric["ci_of"] == "difference":
        return f"{value:+.1%}" if key in ("difference", "ci_low", "ci_high") else f"{value:.1%}"
    return f"{value:,.6g}"


def _show(found: dict[str, Any]) -> None:
    shown = [{
        "metric": m["name"], "baseline": _fmt(m, "baseline"), "candidate": _fmt(m, "candidate"),
        "difference": _fmt(m, "difference"),
        "CI": "" if m["ci_low"] is None else f"{_fmt(m, 'ci_low')} .. {_fmt(m, 'ci_high')}",
        "p adj": "" if m["p_adjusted"] is None else f"{m['p_adjusted']:.3g}",
        "status": m["status"] + (" (critical)" if m["critical"] else ""),
    } for m in found["metrics"]]
    title = (f"gate: {found['candidate']} ({found['candidate_runs']} runs) against "
             f"{found['baseline']} ({found['baseline_runs']} runs); gate.yaml "
             f"{found['config_version']}, alpha {found['alpha']:g}")
    table(shown, list(shown[0]) if shown else ["metric"], title=title)
    out.print("CI: difference of rates (Newcombe), or Hodges-Lehmann shift of cost and "
              "latency", highlight=False)
    for reason in found["reasons"]:
        out.print(f"  {reason}", highlight=False)
    score = "" if found["score"] is None else f" (score {found['score']:g})"
    out.print(f"verdict: {found['verdict']}{score}", highlight=False)


def gate(
    baseline: Annotated[str, typer.Option(
        help="the cohort to compare against, e.g. agent_version=1.4.1 (keys: agent_version, "
             "prompt_version, model, policy_version, tool_version; join several with ',')")],
    candidate: Annotated[str, typer.Option(help="the cohort under test, same form")],
    workflow: Annotated[str | None, typer.Option(help="only this workflow")] = None,
    since: Annotated[str, typer.Option(help="runs finished since: 24h, 7d, or ISO")] = "24h",
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    config: Annotated[Path | None, typer.Option(
        help="a gate.yaml (default: the packaged one; docs/release-gate.md)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare two cohorts of runs (success rate, cost per successful task, tool errors,
    policy blocks, rollbacks, p95 latency) and exit with the verdict: 0 pass, 1 marginal,
    2 fail, 3 insufficient data, 4 could not run."""
    refusals: tuple[type[BaseException], ...] = (*known_errors(), ValueError)
    try:
        from agentledger.queries.gate import cohorts

        cohorts(baseline, candidate)  # refused here, before waiting for an API
        text = _config_text(config)
        with connect.ledger() as ledger:
            found = ledger.get("/v1/gate", baseline=baseline, candidate=candidate,
                               workflow=workflow, since=since, until=until, tenant=tenant,
                               config=text)
    except refusals as exc:
        print_error(exc)
        raise typer.Exit(COULD_NOT_RUN) from None
    if as_json:
        print_json(found)
    else:
        _show(found)
    raise typer.Exit(int(found["exit_code"]))
