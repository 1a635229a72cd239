"""A versioned model price table, used when the caller does not give ``cost_usd``.

The version lands in the event (``price_version``), so finance can tell which table a
cost came from after prices change. Unknown models are priced at 0 with version
``unpriced`` rather than failing the agent: find them with
``JSONExtractString(body, 'price_version') = 'unpriced'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


@dataclass(frozen=True)
class PriceTable:
    version: str
    prices: dict[tuple[str, str], ModelPrice]

    def cost(
        self, provider: str, model: str, tokens_in: int, tokens_out: int, cached_tokens: int = 0
    ) -> tuple[float, str]:
        """(cost in USD, price version used)."""
        price = self.prices.get((provider, model))
        if price is None:
            return 0.0, "unpriced"
        uncached = max(tokens_in - cached_tokens, 0)
        usd = (
            uncached * price.input_per_mtok
            + min(cached_tokens, tokens_in) * price.cached_input_per_mtok
            + tokens_out * price.output_per_mtok
        ) / 1_000_000
        return round(usd, 10), self.version


DEFAULT_PRICES: Final = PriceTable(
    version="2026-11-01",
    prices={
        ("openai", "gpt-4o"): ModelPrice(2.50, 10.00, 1.25),
        ("openai", "gpt-4o-mini"): ModelPrice(0.15, 0.60, 0.075),
        ("anthropic", "claude-sonnet"): ModelPrice(3.00, 15.00, 0.30),
        ("anthropic", "claude-haiku"): ModelPrice(0.80, 4.00, 0.08),
        ("google", "gemini-flash"): ModelPrice(0.10, 0.40, 0.025),
    },
)
