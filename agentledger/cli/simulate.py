"""``agentledger simulate``: realistic agent runs, or a scripted scenario, through the SDK."""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.render import UserError, err, out, print_json
from agentledger.core.settings import Settings


def simulate(
    runs: Annotated[int, typer.Option(min=1, help="how many agent runs")] = 100,
    rate: Annotated[float, typer.Option(min=0, help="runs per second (0 = as fast as possible)")]
    = 0.0,
    seed: Annotated[int, typer.Option(help="random seed; same seed, same runs")] = 0,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="tool failure probability")]
    = 0.02,
    scenario: Annotated[str | None, typer.Option(
        help="a scripted scenario in event time instead of --runs: healthy, tool-outage or "
        "runaway. Agents obey the control loop (run `agentledger streams` or `up`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")]
    = False,
) -> None:
    """Drive the SDK with realistic agent runs (ticket triage, CRM update, refund with
    approval) and wait until Kafka acknowledged every event."""
    from rich.progress import Progress

    from agentledger.core.kafka import client_config, default_topics, ensure_topics
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.simulator import Simulator

    settings = connect.settings()
    bootstrap = connect.bootstrap(settings)
    ensure_topics(client_config(bootstrap, "admin", extra=settings.kafka_security),
                  default_topics(settings.events_partitions))
    if scenario is not None:
        _simulate_scenario(settings, bootstrap, scenario, seed, as_json)
        return
    sim = Simulator(lambda ident: Ledger.connect(
        bootstrap, ident, redact_keys=settings.redact_keys,
        producer_overrides=settings.kafka_security), seed=seed, error_rate=error_rate)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("simulating runs", total=runs)
        result = sim.run(runs, rate=rate, progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json({"events": result.events, "runs": result.runs})
    else:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        out.print(f"delivered {result.events} events from {result.runs} runs ({outcomes})",
                  highlight=False)


def _simulate_scenario(settings: Settings, bootstrap: str, name: str, seed: int,
                       as_json: bool) -> None:
    from rich.progress import Progress

    from agentledger.producers.emitter import Ledger
    from agentledger.producers.guard import ControlFollower
    from agentledger.producers.scenarios import SCENARIOS, run_scenario

    if name not in SCENARIOS:
        raise UserError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    with ControlFollower(bootstrap, security=settings.kafka_security) as follower:
        if not follower.wait_for(lambda: follower.event_time > 0 or bool(follower.heartbeats),
                                 timeout_s=60):
            raise UserError("no stream worker heartbeat on agent.control within 60s: start "
                            "`agentledger streams` (or `agentledger up`) first")
        with Progress(console=err, transient=True, disable=as_json) as progress:
            task = progress.add_task(f"scenario {name}", total=None)
            result = run_scenario(
                name, lambda ident, clock: Ledger.connect(
                    bootstrap, ident, redact_keys=settings.redact_keys, clock=clock,
                    producer_overrides=settings.kafka_security),
                follower=follower, seed=seed, progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json(result.as_dict())
        return
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(result.refusals.items())) or "none"
    out.print(f"scenario {name}: {result.events} events, {result.runs} runs ({outcomes}); "
              f"refused by the control loop: {refusals}", highlight=False)
