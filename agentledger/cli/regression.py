"""``agentledger regression export|run|compare``: real tasks, re-run on every release.

``export`` writes a set file from the ledger (through the API, like every query command).
``run`` runs the user's agent over every case with the SDK, each run recorded under the
release label (envelope ``env`` ``release:<label>``, run id
``regression:<set>:<label>:<case>``), waits until the ledger holds them all, and — with
``--baseline`` — compares the label with the baseline label's run of the same set
(McNemar's exact test on paired outcomes, plus cost): the exit code is the verdict, as
``agentledger gate``'s: 0 pass, 1 marginal, 2 fail, 3 insufficient data, 4 could not run.

The agent is ``module:function`` called as ``function(inputs, run)``: ``inputs`` is what
the resolver returned for the case, ``run`` the SDK's :class:`RunContext` to record model
and tool calls on. It returns an outcome (``"success"``, ``"failure"``, ...), a bool, or
None (success); an exception is a failure. The resolver (``module:function``, called with
the case as a dict) turns a case's ``input_ref`` into the input; without one the agent
receives the ``input_ref`` itself.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, TenantOpt, UntilOpt
from agentledger.cli.render import UserError, err, known_errors, out, print_error, print_json
from agentledger.json_encoding import json_default

COULD_NOT_RUN = 4
OUTCOMES = ("success", "failure", "aborted", "rolled_back")
regression_app = typer.Typer(help="Regression sets of real tasks: export from the ledger, "
                             "run on a release, compare paired with a baseline.",
                             no_args_is_help=True)


def _refusals() -> tuple[type[BaseException], ...]:
    return (*known_errors(), ValueError, UserError, OSError)


def _load_set(path: Path) -> Any:
    from agentledger.streams.regression import parse_set

    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_set(text, str(path))


def _import(spec: str, what: str) -> Callable[..., Any]:
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise UserError(f"{what} {spec!r}: expected module:function")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the user's own modules, as `python -m` finds them
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what} {spec!r}: cannot import {module_name}: {exc}") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise UserError(f"{what} {spec!r}: {module_name} has no function {name}")
    return found  # type: ignore[no-any-return]


def _outcome(value: Any) -> str:
    if value is None or value is True:
        return "success"
    if value is False:
        return "failure"
    if isinstance(value, str) and value in OUTCOMES:
        return value
    raise UserError(f"the agent returned {value!r}: return one of {', '.join(OUTCOMES)}, "
                    "a bool or None")


@regression_app.command("export")
def export(
    workflow: Annotated[str, typer.Option(help="the workflow whose runs become cases")],
    n: Annotated[int, typer.Option(min=1, max=10_000, help="newest n finished runs")] = 200,
    outcome: Annotated[str | None, typer.Option(
        help="only runs with this outcome (success, failure, aborted, rolled_back)")] = None,
    since: Annotated[str, typer.Option(help="runs finished since: 24h, 30d, or ISO")] = "30d",
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="write the set here (default: stdout)")] = None,
) -> None:
    """Write a regression set (JSON, versioned by its set_id) from the ledger's real runs:
    each case has the input reference and hash, the outcome and the tools called."""
    try:
        with connect.ledger() as ledger:
            found = ledger.get("/v1/regression/export", workflow=workflow, n=n,
                               outcome=outcome, since=since, until=until, tenant=tenant)
        text = json.dumps(found, default=json_default, indent=1) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            err.print(f"wrote {len(found['cases'])} cases of {workflow} (set "
                      f"{found['set_id']}) to {output}", highlight=False)
    except _refusals() as exc:
        print_error(exc)
        raise typer.Exit(COULD_NOT_RUN) from None


def _results(ledger: Any, regression_set: Any, label: str) -> dict[str, Any]:
    from agentledger.streams.regression import CaseResult

    found = ledger.get("/v1/regression/results", set_id=regression_set.set_id, label=label,
                       tenant=regression_set.tenant)
    return {k: CaseResult(v["outcome"], float(v["cost_usd"])) for k, v in found["cases"].items()}


def _compare(regression_set: Any, baseline: str, candidate: str, max_drop: float,
             alpha: float, min_cases: int) -> Any:
    from agentledger.streams.regression import CompareConfig, check_label, compare

    check_label(baseline)
    check_label(candidate)
    with connect.ledger() as ledger:
        base = _results(ledger, regression_set, baseline)
        cand = _results(ledger, regression_set, candidate)
    return compare(regression_set, baseline, base, candidate, cand,
                   CompareConfig(alpha=alpha, max_drop=max_drop, min_cases=min_cases))


def _show(found: dict[str, Any]) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    out.print(f"set {found['set_id']}: {found['candidate']} against {found['baseline']} on "
              f"{found['paired']} of {found['cases']} cases", highlight=False)
    if found["baseline_success"] is not None:
        out.print(f"  success {pct(found['candidate_success'])} vs "
                  f"{pct(found['baseline_success'])}: {found['broken']} broken, "
                  f"{found['fixed']} fixed, McNemar exact p {found['mcnemar_p']:.3g}",
                  highlight=False)
        ratio = found["cost_ratio"]
        out.print(f"  cost {found['candidate_cost']:.6g} vs {found['baseline_cost']:.6g} USD"
                  + ("" if ratio is None else f" (x{ratio:.3g}, Wilcoxon p "
                     f"{found['cost_p']:.3g})"), highlight=False)
    for reason in found["reasons"]:
        out.print(f"  {reason}", highlight=False)
    out.print(f"verdict: {found['verdict']}", highlight=False)


MaxDrop = Annotated[float, typer.Option(
    min=0, max=1, help="fail when the paired success drop is larger than this (and "
    "significant)")]
Alpha = Annotated[float, typer.Option(min=0.0001, max=0.5, help="McNemar's test level")]
MinCases = Annotated[int, typer.Option(min=1, help="fewer paired cases: insufficient data")]


@regression_app.command("compare")
def compare_cmd(
    set_file: Annotated[Path, typer.Argument(metavar="SET", help="the set file")],
    baseline: Annotated[str, typer.Option(help="the baseline's release label")],
    candidate: Annotated[str, typer.Option(help="the candidate's release label")],
    max_drop: MaxDrop = 0.03, alpha: Alpha = 0.05, min_cases: MinCases = 20,
    as_json: JsonFlag = False,
) -> None:
    """Compare two labels' runs of a set, paired by case; exit with the verdict."""
    try:
        regression_set = _load_set(set_file)
        found = _compare(regression_set, baseline, candidate, max_drop, alpha,
                         min_cases).as_dict()
    except _refusals() as exc:
        print_error(exc)
        raise typer.Exit(COULD_NOT_RUN) from None
    if as_json:
        print_json(found)
    else:
        _show(found)
    raise typer.Exit(int(found["exit_code"]))


def _run_cases(regression_set: Any, label: str, agent: Callable[..., Any],
               resolver: Callable[..., Any] | None, agent_version: str) -> dict[str, Any]:
    from agentledger.core.kafka import client_config, default_topics, ensure_topics
    from agentledger.producers.context import sha256_json
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.identity import AgentIdentity
    from agentledger.streams.regression import case_run_id, release_env

    settings = connect.settings()
    bootstrap = connect.bootstrap(settings)
    ensure_topics(client_config(bootstrap, "admin", extra=settings.kafka_security),
                  default_topics(settings.events_partitions))
    ledgers: dict[str, Ledger] = {}
    outcomes: dict[str, int] = {}
    hash_matches = 0
    try:
        for case in regression_set.cases:
            led = ledgers.get(case.agent)
            if led is None:
                ident = AgentIdentity(tenant=regression_set.tenant, agent=case.agent,
                                      agent_version=agent_version, principal="regression",
                                      env=release_env(label))
                led = ledgers[case.agent] = Ledger.connect(
                    bootstrap, ident, redact_keys=settings.redact_keys,
                    producer_overrides=settings.kafka_security)
            inputs = resolver(case.model_dump()) if resolver is not None else case.input_ref
            hash_matches += sha256_json(inputs) == case.inputs_hash
            run = led.run(regression_set.workflow, inputs=inputs, input_ref=case.input_ref,
                          run_id=case_run_id(regression_set.set_id, label, case.case_id))
            try:
                with run:
                    outcome = _outcome(agent(inputs, run))
                    if not run.finished:
                        run.finish(outcome)
            except UserError:
                raise
            except Exception:  # the agent failing is a failed case, recorded by the run
                pass
            outcomes[run.outcome or "failure"] = outcomes.get(run.outcome or "failure", 0) + 1
        for led in ledgers.values():
            led.flush()
    finally:
        for led in ledgers.values():
            led.close()
    return {"outcomes": outcomes, "inputs_hash_matches": hash_matches}


@regression_app.command("run")
def run_cmd(
    set_file: Annotated[Path, typer.Argument(metavar="SET", help="the set file")],
    agent: Annotated[str, typer.Option(
        help="module:function, called as function(inputs, run) for every case")],
    label: Annotated[str, typer.Option(
        help="the release label these runs are recorded under (e.g. baseline, 1.4.2)")],
    resolver: Annotated[str | None, typer.Option(
        help="module:function turning a case (a dict) into the agent's input; default: "
             "the case's input_ref")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="compare with this label's run of the same set and exit with the verdict")]
    = None,
    agent_version: Annotated[str | None, typer.Option(
        help="the agent_version to record (default: the label)")] = None,
    wait: Annotated[float, typer.Option(
        min=1, help="seconds to wait for the ledger to hold every run")] = 120.0,
    max_drop: MaxDrop = 0.03, alpha: Alpha = 0.05, min_cases: MinCases = 20,
    as_json: JsonFlag = False,
) -> None:
    """Run an agent over every case of a set under a release label; with --baseline,
    compare paired (McNemar's exact test, plus cost) and exit 0 pass, 1 marginal, 2 fail,
    3 insufficient data, 4 could not run."""
    from agentledger.streams.regression import check_label

    try:
        regression_set = _load_set(set_file)
        check_label(label)
        if baseline is not None:
            check_label(baseline)
            if baseline == label:
                raise UserError("--baseline names the label being run: use another label")
        agent_fn = _import(agent, "--agent")
        resolve = _import(resolver, "--resolver") if resolver else None
        ran = _run_cases(regression_set, label, agent_fn, resolve, agent_version or label)
        expected = len(regression_set.cases)
        deadline = time.monotonic() + wait
        with connect.ledger() as ledger:
            while True:  # the sink lands the runs asynchronously: poll the ledger for them
                landed = len(_results(ledger, regression_set, label))
                if landed >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if landed < expected:
            raise UserError(f"the ledger holds {landed} of {expected} runs after {wait:g}s: "
                            "is the sink running (agentledger up)?")
        found: dict[str, Any] = {"set_id": regression_set.set_id, "label": label,
                                 "cases": expected, **ran}
        if baseline is not None:
            found["comparison"] = _compare(regression_set, baseline, label, max_drop, alpha,
                                           min_cases).as_dict()
    except _refusals() as exc:
        print_error(exc)
        raise typer.Exit(COULD_NOT_RUN) from None
    if as_json:
        print_json(found)
    else:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(ran["outcomes"].items()))
        out.print(f"ran {expected} cases of set {regression_set.set_id} as {label!r}: {shown}; "
                  f"input hash matched the original on {ran['inputs_hash_matches']}",
                  highlight=False)
        if "comparison" in found:
            _show(found["comparison"])
    raise typer.Exit(int(found["comparison"]["exit_code"]) if "comparison" in found else 0)
