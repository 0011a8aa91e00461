"""Shadow prices for shared budgets: dual ascent on the budget constraint (paper, appendix B.3).

The paper's problem (6) is max sum u_k(a) subject to sum c(a) <= B. Given a price lambda >= 0, each request
chooses locally, eq. (8): argmax over {run, refuse} (or {run, degrade, refuse}) of u_k(a) - lambda c(a).
FMOS then moves lambda by the excess of the consumption so chosen over the capacity, the dual's subgradient:

    lambda <- max(0, lambda + eta * (demand - capacity) / capacity)      once per `interval`

- utility: a request is worth its tenant's weight (default 1), whatever its size;
- cost: its amount in units of the budget's even pace per step (limit * interval / window), so the price
  is dimensionless and comparable to weights; run iff weight >= price * cost. Under contention big requests
  and low weights are priced out first (value per unit of resource), which is what (6) asks for;
- demand: what the price let through in the step (sum c(a*(lambda))), not what was asked: counting refused
  requests would push the price up for as long as anyone asks and, with equal weights, lock everyone out;
- capacity: the pace that spends the rest of the window's budget evenly (remaining * interval / time left),
  so unused budget carries forward and over-spending tightens the price;
- the normalised excess is clipped at +10 so that one burst against a nearly spent budget cannot lock
  a tenant out for hundreds of steps (steps without demand move the price down by eta each).

The price shapes who gets the capacity; it guarantees nothing. The hard cap in `budgets.py` (reservations
against the limit) is what keeps the shared limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_EXCESS = 10.0


def aligned(now: float, period: float) -> float:
    return math.floor(now / period) * period


@dataclass
class DualPrice:
    limit: float
    window: float
    interval: float
    eta: float
    price: float = 0.0
    step_start: float | None = None  # the step now accumulating demand (aligned to `interval`)
    capacity: float | None = None  # the step's capacity, fixed when it opened
    demand: float = 0.0
    last_demand: float = 0.0
    last_capacity: float = 0.0
    steps: int = 0

    @property
    def unit(self) -> float:
        """The even pace per step: a request of this amount costs 1."""
        return self.limit * self.interval / self.window

    def cost(self, amount: float) -> float:
        return amount / self.unit

    def admits(self, weight: float, amount: float) -> bool:
        """Eq. (8) for a request of utility `weight`: run iff weight - price * cost >= 0."""
        return weight >= self.price * self.cost(amount)

    def admitted(self, amount: float) -> None:
        self.demand += amount

    def advance(self, now: float, remaining: float) -> bool:
        """Close the steps that ended before `now`; `remaining` is what the budget has left in its window.
        Returns whether the price moved."""
        step = aligned(now, self.interval)
        if self.step_start is not None and step <= self.step_start:
            return False
        before = self.price
        if self.step_start is not None:
            if self.capacity is not None:
                self.price = self._update(self.demand, self.capacity)
                self.last_demand, self.last_capacity = self.demand, self.capacity
            # Steps nobody asked in: demand 0, a normalised excess of -1 each.
            missed = max(0, round((step - self.step_start) / self.interval) - 1)
            self.price = max(0.0, self.price - self.eta * missed)
            self.steps += 1 + missed
        self.step_start, self.demand = step, 0.0
        time_left = aligned(step, self.window) + self.window - step
        self.capacity = max(remaining, 0.0) * self.interval / max(time_left, self.interval)
        return self.price != before

    def _update(self, demand: float, capacity: float) -> float:
        capacity = max(capacity, self.unit * 1e-6)  # a spent budget: any demand is all excess
        excess = min(MAX_EXCESS, (demand - capacity) / capacity)
        return max(0.0, self.price + self.eta * excess)

    def restore(self, price: float, updated: float) -> None:
        """Resume from a persisted price; the step it was saved in leaves it as it was (its demand is lost),
        the steps since then, with no demand, move it down."""
        self.price, self.step_start, self.capacity = max(0.0, price), aligned(updated, self.interval), None

    def snapshot(self) -> dict[str, Any]:
        return {
            "price": round(self.price, 6), "eta": self.eta, "interval": self.interval, "unit": self.unit,
            "demand": self.demand, "capacity": self.capacity, "last_demand": self.last_demand,
            "last_capacity": self.last_capacity, "steps": self.steps,
        }
