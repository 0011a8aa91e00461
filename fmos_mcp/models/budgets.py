"""Budgets: what tenants, servers and models spend per window, enforced before a request runs.

Reservation semantics. `check` reserves the request's estimate on every budget it counts against, so that
concurrent requests cannot all pass on the same headroom; `commit` settles the reservation to the actual usage
and `release` drops it when the request failed. A request is admitted only while used + reserved + estimate
stays within the limit, so the committed total exceeds a limit only by what requests spent beyond their
estimates: at most one request's excess per session in flight when the limit was reached (after that, every
check is refused). With exact or over-estimates the limit is never exceeded.

Windows are fixed, aligned to the UTC epoch (a 1d window resets at 00:00 UTC; 30d is a 30-day block, not a
calendar month): a burst across a boundary can spend up to twice the limit in one window's length. A request
is counted in the window it was reserved in, even when it commits after the window rolled.

Atomicity: `check`, `commit` and `release` never await; on one event loop each runs to completion, so a check
and its reservation are atomic without a lock. They are not thread-safe: call them from the loop.

Persistence is write-behind: commits are recorded in memory and a `BatchWriter` adds them to SQLite every
`flush_interval` seconds (`run`), off the request path. A new `BudgetBook` on the same database resumes the
usage of the current windows; a crash loses at most the last interval's commits, and reservations.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.abc

from fmos_mcp import logs
from fmos_mcp.models.budget_config import PER_FIELDS, Budget, BudgetConfig, Degrade, window_text
from fmos_mcp.models.pricing import DualPrice
from fmos_mcp.state.batch import BatchWriter
from fmos_mcp.state.db import StateDB
from fmos_mcp.traps.trap import TrapKind, TrapRecord

log = logs.get("fmos.budgets")
RETENTION = 90 * 86400.0  # usage rows of windows that ended longer ago than this are pruned at start
IDLE_SWEEP = 60.0  # seconds between sweeps of finished windows out of memory


@dataclass(frozen=True)
class Usage:
    """Amounts of each resource. None: the request does not touch that resource (its budgets do not apply);
    0: it does, by an amount not known yet (an exhausted budget still refuses it)."""

    tokens_in: float | None = None
    tokens_out: float | None = None
    requests: float | None = None
    tool_calls: float | None = None
    bytes: float | None = None
    judge_calls: float | None = None

    def touches(self, resource: str) -> bool:
        if resource == "tokens":
            return self.tokens_in is not None or self.tokens_out is not None
        return getattr(self, resource) is not None

    def amount(self, resource: str) -> float:
        if resource == "tokens":
            return float((self.tokens_in or 0) + (self.tokens_out or 0))
        return float(getattr(self, resource) or 0)


@dataclass(frozen=True)
class Charge:
    """A request about to run: who asks, where it goes (a downstream server, a model, or both) and its estimate."""

    tenant: str
    estimate: Usage
    server: str | None = None
    model: str | None = None
    degraded: bool = False  # already the cheaper call: a degrade budget it still crosses denies it

    def degraded_to(self, target: Degrade, estimate: Usage | None = None) -> Charge:
        """The charge of the cheaper call a degrade verdict asks for (re-estimate it for the lower reasoning level)."""
        return replace(self, model=target.model or self.model, estimate=estimate or self.estimate, degraded=True)


@dataclass
class _Counter:
    start: float  # the fixed window it counts
    used: float = 0.0
    reserved: float = 0.0


@dataclass(slots=True)
class _Hold:
    counter: _Counter
    budget: str
    subject: tuple[str, ...]
    resource: str
    window: float
    start: float
    amount: float


@dataclass
class Ticket:
    holds: tuple[_Hold, ...]
    settled: bool = False


@dataclass
class BudgetVerdict:
    action: str  # allow | deny | degrade
    budget: str | None = None  # the budget that refused (deny, degrade)
    reason: str = ""
    degrade: Degrade | None = None
    remaining: dict[str, float] = field(default_factory=dict)  # budget id -> left in its window after this request
    price: float | None = None  # the shared budget's price, when it was the one that refused
    ticket: Ticket | None = None  # the reservation (allow only): settle with commit or release

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    def meta(self) -> dict[str, Any]:
        """The value of `_meta["fmos/decision"]` on a refused or degraded request."""
        out: dict[str, Any] = {"action": self.action, "trap": "budget", "rule": f"budget:{self.budget}",
                               "reason": self.reason}
        if self.degrade:
            out["degrade"] = self.degrade.as_json()
        return out

    def trap(self) -> TrapRecord | None:
        if self.allowed:
            return None
        snapshot: dict[str, Any] = {"budget": self.budget, "remaining": self.remaining}
        if self.price is not None:
            snapshot["price"] = self.price
        return TrapRecord(TrapKind.BUDGET, "budgets", self.action, self.reason, snapshot)


@dataclass(frozen=True)
class _Refusal:
    budget: Budget
    reason: str
    remaining: float
    price: float | None = None


class BudgetBook:
    def __init__(self, db: StateDB | None, config: BudgetConfig, *, clock: Callable[[], float] = time.time,
                 flush_interval: float = 1.0) -> None:
        self.db = db
        self.clock = clock
        self.config = BudgetConfig()
        self._counters: dict[tuple[str, tuple[str, ...]], _Counter] = {}
        # Which budgets (and counter subjects) a kind of request meets: computed once per kind.
        self._scoped: dict[tuple[Any, ...], tuple[tuple[Budget, tuple[str, ...]], ...]] = {}
        self._prices: dict[str, DualPrice] = {}
        self._crossed: set[tuple[str, tuple[str, ...], float]] = set()  # logged once per budget, subject and window
        self.writer = BatchWriter("budget_usage", self._write, interval=flush_interval) if db else None
        if db is not None:
            self._prune()
        self.configure(config)

    # ------------------------------------------------------------------ configuration

    def configure(self, config: BudgetConfig) -> None:
        """Apply (re)loaded policies: a budget whose resource, window and keying are unchanged keeps its
        counters; the others resume from the database."""
        old = {b.id: b for b in self.config.budgets}
        fresh = [b for b in config.budgets if not _same_counting(old.get(b.id), b)]
        keep = {b.id for b in config.budgets} - {b.id for b in fresh}
        self._counters = {k: c for k, c in self._counters.items() if k[0] in keep}
        prices = {}
        for b in config.budgets:
            if b.shared:
                interval = config.pricing.interval_for(b.window)
                price = self._prices.get(b.id) if b.id in keep else None
                if price is None:
                    price = DualPrice(b.limit, b.window, interval, config.pricing.step)
                price.limit, price.interval, price.eta = b.limit, interval, config.pricing.step
                prices[b.id] = price
        self._prices = prices
        self._scoped = {}
        self.config = config
        if self.db is not None:
            self._load(fresh)

    # ------------------------------------------------------------------ the request path

    def check(self, charge: Charge) -> BudgetVerdict:
        """Admit (and reserve), deny or degrade a request. Never awaits: atomic on the event loop."""
        now = self.clock()
        weight = self.config.pricing.weight(charge.tenant)
        plan: list[tuple[Budget, tuple[str, ...], _Counter, float]] = []
        refusals: list[_Refusal] = []
        for budget, subject in self._applicable(charge):
            counter = self._counter(budget, subject, now)
            amount = charge.estimate.amount(budget.resource)
            refusal = self._refusal(budget, counter, amount, weight, now)
            if refusal:
                refusals.append(refusal)
                self._note_crossing(refusal, subject, counter)
            else:
                plan.append((budget, subject, counter, amount))
        if refusals:
            return self._refuse(refusals, charge)
        holds = []
        for budget, subject, counter, amount in plan:
            counter.reserved += amount
            if budget.shared:
                self._prices[budget.id].admitted(amount)
            holds.append(_Hold(counter, budget.id, subject, budget.resource, budget.window, counter.start, amount))
        return BudgetVerdict("allow", remaining={b.id: b.limit - c.used - c.reserved for b, _, c, _ in plan},
                             ticket=Ticket(tuple(holds)))

    def commit(self, verdict: BudgetVerdict | Ticket | None, actual: Usage | None = None) -> None:
        """Settle a reservation to what the request really spent; a resource `actual` leaves None (or no
        `actual` at all) is settled at its estimate, so a forgotten field does not zero a count."""
        ticket = verdict.ticket if isinstance(verdict, BudgetVerdict) else verdict
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        now = self.clock()
        for hold in ticket.holds:
            spent = actual.amount(hold.resource) if actual and actual.touches(hold.resource) else hold.amount
            if hold.counter.start == hold.start:  # else the window rolled: the request stays in its old window
                hold.counter.reserved = max(0.0, hold.counter.reserved - hold.amount)
                hold.counter.used += spent
            if spent and self.writer is not None:
                self.writer.record(("usage", hold.budget, json.dumps(hold.subject), hold.resource, hold.window, hold.start,
                                    spent, now))

    def release(self, verdict: BudgetVerdict | Ticket | None) -> None:
        """Drop a reservation: the request failed before it spent anything."""
        ticket = verdict.ticket if isinstance(verdict, BudgetVerdict) else verdict
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        for hold in ticket.holds:
            if hold.counter.start == hold.start:
                hold.counter.reserved = max(0.0, hold.counter.reserved - hold.amount)

    def _applicable(self, charge: Charge) -> tuple[tuple[Budget, tuple[str, ...]], ...]:
        estimate = charge.estimate
        key = (charge.tenant, charge.server, charge.model, estimate.tokens_in is None, estimate.tokens_out is None,
               estimate.requests is None, estimate.tool_calls is None, estimate.bytes is None,
               estimate.judge_calls is None)
        found = self._scoped.get(key)
        if found is None:
            if len(self._scoped) > 10_000:  # many tenants: start over rather than grow
                self._scoped.clear()
            found = self._scoped[key] = tuple(
                (b, b.subject(charge.tenant, charge.server, charge.model)) for b in self.config.budgets
                if estimate.touches(b.resource) and b.scopes(charge.tenant, charge.server, charge.model))
        return found

    def _counter(self, budget: Budget, subject: tuple[str, ...], now: float) -> _Counter:
        start = _window_start(now, budget.window)
        counter = self._counters.get((budget.id, subject))
        if counter is None:
            counter = self._counters[(budget.id, subject)] = _Counter(start)
        elif counter.start < start:  # a new window: in-flight requests settle into the old one
            counter.start, counter.used, counter.reserved = start, 0.0, 0.0
        return counter

    def _refusal(self, budget: Budget, counter: _Counter, amount: float, weight: float, now: float) -> _Refusal | None:
        left = budget.limit - counter.used - counter.reserved
        price = self._price(budget, left, now)
        if amount > left or (amount == 0 and left <= 0):
            what = f"needs {_num(amount)}" if amount else "would spend more"
            return _Refusal(budget, f"budget '{budget.id}' is spent: {_num(max(left, 0))} of {_num(budget.limit)} "
                                    f"{_unit(budget.resource)} left in this {window_text(budget.window)} window "
                                    f"and the request {what}", left)
        if price is not None and amount and not price.admits(weight, amount):
            return _Refusal(budget, f"shared budget '{budget.id}' is in demand: its price {price.price:.3g} x "
                                    f"cost {price.cost(amount):.3g} exceeds the tenant's weight {weight:g}",
                            left, price.price)
        return None

    def _price(self, budget: Budget, left: float, now: float) -> DualPrice | None:
        """A shared budget's price, moved for the steps that ended (persisted when it moved)."""
        price = self._prices.get(budget.id)
        if price is not None and price.advance(now, left) and self.writer is not None:
            self.writer.record(("price", budget.id, budget.resource, price.price, now))
        return price

    def _refuse(self, refusals: list[_Refusal], charge: Charge) -> BudgetVerdict:
        """Deny when any refusing budget denies (or cannot degrade this charge); else degrade by the first."""
        def degradable(r: _Refusal) -> bool:
            return r.budget.on_exceed == "degrade" and r.budget.degrade is not None and not charge.degraded

        chosen = next((r for r in refusals if not degradable(r)), refusals[0])
        action = "degrade" if degradable(chosen) else "deny"
        return BudgetVerdict(action, chosen.budget.id, chosen.reason,
                             chosen.budget.degrade if action == "degrade" else None,
                             {r.budget.id: max(r.remaining, 0.0) for r in refusals}, chosen.price)

    def _note_crossing(self, refusal: _Refusal, subject: tuple[str, ...], counter: _Counter) -> None:
        key = (refusal.budget.id, subject, counter.start)
        if key not in self._crossed:  # once per budget, subject and window: a flood of refusals is not news
            self._crossed.add(key)
            log.warning("budget trap", budget=refusal.budget.id, subject=list(subject), reason=refusal.reason,
                        used=counter.used, reserved=counter.reserved, limit=refusal.budget.limit)

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> dict[str, Any]:
        """Usage of every budget in its current window, and the shared budgets' prices (for `fmos-mcp budget`)."""
        now = self.clock()
        usage = []
        for budget in self.config.budgets:
            subjects = [s for (bid, s) in self._counters if bid == budget.id] or [None]
            for subject in subjects:
                counter = self._counter(budget, subject, now) if subject is not None \
                    else _Counter(_window_start(now, budget.window))
                usage.append(_row(budget, subject, counter))
        prices = []
        for budget in self.config.budgets:
            if budget.shared:
                counter = self._counters.get((budget.id, _SHARED))
                current = counter is not None and counter.start == _window_start(now, budget.window)
                left = budget.limit - (counter.used + counter.reserved if counter and current else 0.0)
                price = self._price(budget, left, now)
                assert price is not None
                prices.append({"budget": budget.id, "resource": budget.resource, **price.snapshot()})
        return {"now": now, "usage": usage, "prices": prices}

    # ------------------------------------------------------------------ persistence

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write usage and prices behind, and forget finished windows, until cancelled (then a last flush)."""
        async with anyio.create_task_group() as tg:
            if self.writer is not None:
                await tg.start(self.writer.run)
            task_status.started()
            while True:
                await anyio.sleep(IDLE_SWEEP)
                self.forget_finished()

    def forget_finished(self) -> int:
        """Drop counters whose window has ended (their subjects may never come back); returns how many.
        In-flight requests of those windows still settle: into the database, through their tickets."""
        now = self.clock()
        windows = {b.id: b.window for b in self.config.budgets}
        finished = [k for k, c in self._counters.items() if c.start + windows.get(k[0], 0) <= now]
        for key in finished:
            del self._counters[key]
        self._crossed = {k for k in self._crossed if k[2] + windows.get(k[0], 0) > now}
        return len(finished)

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.flush()

    def _write(self, items: list[Any]) -> None:
        """On a worker thread: add the usage deltas (coalesced), keep the latest price of each budget."""
        deltas: dict[tuple[Any, ...], list[float]] = {}
        prices: dict[str, tuple[str, str, float, float]] = {}
        for item in items:
            if item[0] == "usage":
                _, bid, subject, resource, window, start, spent, ts = item
                entry = deltas.setdefault((bid, subject, resource, window, start), [0.0, ts])
                entry[0] += spent
                entry[1] = max(entry[1], ts)
            else:
                prices[item[1]] = item[1:]
        assert self.db is not None
        with self.db.locked() as db, db.conn:
            db.conn.executemany(
                "INSERT INTO budget_usage (budget, subject, resource, window_seconds, window_start, used, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (budget, subject, resource, window_seconds, window_start) "
                "DO UPDATE SET used = used + excluded.used, updated = max(updated, excluded.updated)",
                [(*key, spent, ts) for key, (spent, ts) in deltas.items()])
            db.conn.executemany(
                "INSERT INTO budget_prices (budget, resource, price, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (budget) DO UPDATE SET resource = excluded.resource, price = excluded.price, "
                "updated = excluded.updated", list(prices.values()))

    def _load(self, budgets: list[Budget]) -> None:
        """Resume the current windows' usage (and prices) of these budgets; a sync read, at start or reload."""
        assert self.db is not None
        now = self.clock()
        with self.db.locked() as db:
            for budget in budgets:
                start = _window_start(now, budget.window)
                rows = db.execute(
                    "SELECT subject, used FROM budget_usage WHERE budget = ? AND resource = ? AND window_seconds = ? "
                    "AND window_start = ?", [budget.id, budget.resource, budget.window, start]).fetchall()
                for subject, used in rows:
                    self._counters[(budget.id, tuple(json.loads(subject)))] = _Counter(start, used=used)
                price = db.execute("SELECT price, updated FROM budget_prices WHERE budget = ? AND resource = ?",
                                   [budget.id, budget.resource]).fetchone()
                if price and budget.id in self._prices:
                    self._prices[budget.id].restore(*price)

    def _prune(self) -> None:
        assert self.db is not None
        with self.db.locked() as db, db.conn:
            db.execute("DELETE FROM budget_usage WHERE window_start + window_seconds < ?", [self.clock() - RETENTION])


def _same_counting(old: Budget | None, new: Budget) -> bool:
    return old is not None and (old.resource, old.window, old.per) == (new.resource, new.window, new.per)


_SHARED: tuple[str, ...] = ()  # the one subject of a shared budget (stored, like all subjects, as a JSON list)


def _window_start(now: float, window: float) -> float:
    return math.floor(now / window) * window


def _unit(resource: str) -> str:
    return {"tokens_in": "input tokens", "tokens_out": "output tokens", "tool_calls": "tool calls",
            "judge_calls": "judge calls"}.get(resource, resource)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _row(budget: Budget, subject: tuple[str, ...] | None, counter: _Counter) -> dict[str, Any]:
    return {
        "budget": budget.id, "resource": budget.resource, "per": budget.per,
        "subject": dict(zip(PER_FIELDS[budget.per], subject, strict=False)) if subject is not None else None,
        "used": counter.used, "reserved": counter.reserved, "limit": budget.limit,
        "remaining": max(0.0, budget.limit - counter.used - counter.reserved),
        "window": budget.window, "window_start": counter.start, "resets_at": counter.start + budget.window,
        "on_exceed": budget.on_exceed, "degrade": budget.degrade.as_json() if budget.degrade else None,
    }
