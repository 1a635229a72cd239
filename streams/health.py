"""Tool health metrics per (tenant, agent, tool): calls, errors, timeouts, p95 latency.

Windows live in the agent's own (mapped) event time, like every decision window, and one
closes when that agent's clock passes a hop boundary; its metric carries the agent's raw
time. Published once per boundary, as ``tool_health`` on ``agent.metrics``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agentledger.schemas.signals import MetricWindow
from agentledger.streams.windows import HopWindow


class ToolHealth:
    def __init__(self, window_s: int, hop_s: int):
        self.window_s = window_s
        self.hop_s = hop_s
        self.windows: dict[tuple[str, str], dict[str, HopWindow]] = {}
        self.published: dict[tuple[str, str], int] = {}

    def add(self, tenant: str, agent: str, tool: str, at: float, *, failed: bool,
            timeout: bool, latency_ms: float) -> None:
        tools = self.windows.get((tenant, agent))
        if tools is None:
            tools = self.windows[(tenant, agent)] = {}
        w = tools.get(tool)
        if w is None:
            w = tools[tool] = HopWindow(self.window_s, self.hop_s)
        w.add(at, failed=failed, timeout=timeout, latency_ms=latency_ms)

    def close(self, tenant: str, agent: str, clock: float, offset: float
              ) -> list[MetricWindow]:
        """Windows of this agent ending at the last hop boundary ≤ its clock, once."""
        key = (tenant, agent)
        boundary = int(clock // self.hop_s) * self.hop_s
        if boundary <= self.published.get(key, 0):
            return []
        self.published[key] = boundary
        tools = self.windows.get(key, {})
        metrics = []
        for tool, window in list(tools.items()):
            totals = window.totals(boundary - 1e-9)
            window.prune(clock)
            if not window:
                del tools[tool]
            if not totals.calls:
                continue
            values = {"calls": float(totals.calls), "errors": float(totals.failures),
                      "timeouts": float(totals.timeouts), "error_rate": totals.failure_rate,
                      "p95_latency_ms": totals.p95_latency_ms}
            end = boundary + offset
            metrics.append(MetricWindow(
                kind="tool_health", tenant=tenant, agent=agent, subject=tool,
                window_start=datetime.fromtimestamp(end - self.window_s, UTC),
                window_end=datetime.fromtimestamp(end, UTC), revision=1, final=True,
                values=values))
        if not tools:
            self.windows.pop(key, None)
        return metrics
