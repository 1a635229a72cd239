"""Every agent of a tenant calling a tool, and their results summed: the tenant-wide
evidence safe mode reads with ``when.tenant_window_s`` (``docs/control-loop.md``).

One agent's few calls are slow evidence of an outage; its tenant's callers together are
fast. They are summed the breaker's way: each agent's window is read at its own clock,
so a skewed clock cannot move anyone else's window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agentledger.streams.clocks import SourceClocks
from agentledger.streams.windows import CountWindow


class ToolCallers:
    def __init__(self, clocks: SourceClocks,
                 windows: Mapping[tuple[str, str], Mapping[str, CountWindow]]):
        self.clocks = clocks
        self.windows = windows
        """(tenant, agent) -> {tool: that tool's results}: the controller's windows."""
        self.callers: dict[tuple[str, str], set[str]] = {}
        """(tenant, tool) -> the agents with a window of it."""
        self.arrived = 0.0
        """Latest arrival (wall) time of an input record."""
        self._sums: dict[tuple[str, str, int], tuple[int, int]] = {}
        """(calls, failures) per (tenant, tool, seconds) at every agent's current clock:
        the same for every agent of a record, so summed once per record."""

    def add(self, tenant: str, tool: str, agent: str) -> None:
        self.callers.setdefault((tenant, tool), set()).add(agent)

    def forget(self, tenants: Iterable[str]) -> None:
        gone = set(tenants)
        for key in [k for k in self.callers if k[0] in gone]:
            del self.callers[key]

    def next_record(self, arrival: float = 0.0) -> None:
        """Windows and clocks are about to move: the sums of the last record are stale."""
        self._sums.clear()
        self.arrived = max(self.arrived, arrival)

    def totals(self, tenant: str, tool: str, agent: str, at: float, seconds: int
               ) -> tuple[int, int]:
        """(calls, failures) of ``tool`` over ``seconds`` for every agent of ``tenant``
        calling it, each read at its own clock (``agent`` at ``at``). An agent silent (by
        arrival) for longer than the window is left out: its clock is stale, its last
        window is not news."""
        live = at == self.clocks.sources[(tenant, agent)].clock
        key = (tenant, tool, seconds)
        if live and (hit := self._sums.get(key)) is not None:
            return hit
        sources = self.clocks.sources
        since = self.arrived - seconds
        calls = failures = 0
        for a in self.callers.get((tenant, tool), ()):
            src = sources[(tenant, a)]
            if src.arrived and src.arrived < since:
                continue
            c, f = self.windows[(tenant, a)][tool].totals(
                src.clock if a != agent else at, seconds)
            calls += c
            failures += f
        if live:
            self._sums[key] = (calls, failures)
        return calls, failures
