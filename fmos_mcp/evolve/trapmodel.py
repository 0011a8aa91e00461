"""The learned trap: a small logistic model over call features that predicts whether a call the static rules
leave undecided still needs the slow path (the judges in scope). NumPy to fit, plain Python to predict.

Thresholds are set per tool from out-of-fold predictions so that every slow-path catch of that tool in the
training traces would still have been sent to the slow path, times a safety factor; a tool with fewer than
`min_caught` catches in the traces gets the lowest threshold of all. The model may save judge calls, never trade recall for them on what it
has seen. (One global threshold would let the hardest catch of one tool keep every other tool's calls slow.) What it may move at all is decided by the trust plane, not here: sensitive
classes, detector findings and rules that decide are outside its reach.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmos_mcp.evolve.features import tokens

FORMAT = "fmos-trap-model/1"


@dataclass(frozen=True)
class Example:
    features: dict[str, Any]
    caught: bool  # the slow path changed the outcome (a judge said deny)
    group: str = ""  # the session: folds never split one


@dataclass
class TrapModel:
    weights: dict[str, float]
    bias: float
    threshold: float  # for tools without one of their own
    thresholds: dict[str, float] = field(default_factory=dict)  # "server/tool" -> threshold
    audit_share: float = 0.05  # of calls predicted safe, the share still sent to the slow path (fresh labels)
    trained: dict[str, Any] = field(default_factory=dict)  # provenance: examples, positives, folds

    def score(self, features: dict[str, Any]) -> float:
        z = self.bias + sum(self.weights.get(t, 0.0) for t in tokens(features))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def needs_slow(self, features: dict[str, Any]) -> tuple[bool, float]:
        p = self.score(features)
        return p >= self.thresholds.get(_tool(features), self.threshold), p

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "bias": self.bias, "threshold": self.threshold,
                           "thresholds": dict(sorted(self.thresholds.items())),
                           "audit_share": self.audit_share, "trained": self.trained,
                           "weights": dict(sorted(self.weights.items()))}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrapModel:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a trap model (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls({k: float(v) for k, v in data["weights"].items()}, float(data["bias"]), float(data["threshold"]),
                   {k: float(v) for k, v in data.get("thresholds", {}).items()}, float(data.get("audit_share", 0.05)),
                   data.get("trained", {}))


def fit(examples: Sequence[Example], *, l2: float = 1.0, folds: int = 5, safety: float = 0.5, min_count: int = 2,
        min_caught: int = 20, audit_share: float = 0.05, seed: int = 0) -> TrapModel:
    """Fit on all examples; the threshold comes from out-of-fold scores of the positives."""
    if not any(e.caught for e in examples):
        raise ValueError("no call in these traces was caught by the slow path: nothing to learn a trap from")
    vocab = _vocabulary(examples, min_count)
    oof = _out_of_fold(examples, vocab, l2, folds, seed)
    caught: dict[str, list[float]] = {}
    for p, e in zip(oof, examples, strict=True):
        if e.caught:
            caught.setdefault(_tool(e.features), []).append(p)
    threshold = min(min(scores) for scores in caught.values()) * safety
    # A tool's own threshold only on enough evidence: a few catches say little about the next one.
    lowest = {tool: min(scores) for tool, scores in caught.items() if len(scores) >= min_caught}
    weights, bias = _newton(_matrix(examples, vocab), np.array([e.caught for e in examples], float), l2)
    trained = {"examples": len(examples), "caught": sum(e.caught for e in examples), "vocabulary": len(vocab), "folds": folds,
               "safety": safety, "l2": l2}
    return TrapModel({t: float(w) for t, w in zip(vocab, weights, strict=True) if abs(w) > 1e-9}, float(bias),
                     float(threshold), {t: p * safety for t, p in lowest.items()}, audit_share, trained)


def _tool(features: dict[str, Any]) -> str:
    return f"{features.get('server')}/{features.get('tool')}"


def _vocabulary(examples: Sequence[Example], min_count: int) -> list[str]:
    counts = Counter(t for e in examples for t in set(tokens(e.features)))
    return sorted(t for t, n in counts.items() if n >= min_count)


def _matrix(examples: Sequence[Example], vocab: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    x = np.zeros((len(examples), len(vocab)))
    for row, example in enumerate(examples):
        for t in tokens(example.features):
            if t in index:
                x[row, index[t]] = 1.0
    return x


def _newton(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 30) -> tuple[np.ndarray, float]:
    """L2-regularized logistic regression by Newton's method; positives weighted up to balance the classes."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    pos = max(1.0, y.sum())
    sample = np.where(y > 0, (n - pos) / pos, 1.0)
    w = np.zeros(d + 1)
    ridge = np.full(d + 1, l2)
    ridge[-1] = 1e-6  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -60, 60)))
        grad = xb.T @ (sample * (p - y)) + ridge * w
        hess = (xb * (sample * p * (1 - p))[:, None]).T @ xb + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w[:-1], float(w[-1])


def _out_of_fold(examples: Sequence[Example], vocab: list[str], l2: float, folds: int, seed: int) -> list[float]:
    groups = sorted({e.group for e in examples})
    random.Random(seed).shuffle(groups)
    fold_of = {g: i % folds for i, g in enumerate(groups)}
    x, y = _matrix(examples, vocab), np.array([e.caught for e in examples], float)
    scores = np.zeros(len(examples))
    for k in range(folds):
        test = np.array([fold_of[e.group] == k for e in examples])
        if not test.any() or test.all() or y[~test].sum() == 0:
            scores[test] = 0.0  # nothing to learn from: leaves the threshold at 0 (everything stays slow)
            continue
        w, b = _newton(x[~test], y[~test], l2)
        scores[test] = 1.0 / (1.0 + np.exp(-np.clip(x[test] @ w + b, -60, 60)))
    return scores.tolist()
