"""The numbering of a benchmark run, shared by the seeder and the load generator.

Every number is a function of an index, so the load generator knows the right answer for each
call without asking the database: binding ``k`` joins A(k) and B(k) on X(k % numbers). All
numbers are fictional Chinese mobile numbers of 11 national digits, one prefix per role, so a
party is never a pool number and a stranger is never a party.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

X_PREFIX = "+86170"
A_PREFIX = "+86138"
B_PREFIX = "+86139"
STRANGER_PREFIX = "+86137"
FRESH_PREFIX = "+86135"  # parties of new binds made during a run (bench_bindings, freshness)
MAX_INDEX = 10**8  # 8 digits after each prefix


def _number(prefix: str, index: int) -> str:
    if not 0 <= index < MAX_INDEX:
        raise ValueError(f"index {index} out of range for {prefix}")
    return f"{prefix}{index:08d}"


def x_number(i: int) -> str:
    return _number(X_PREFIX, i)


def party_a(k: int) -> str:
    return _number(A_PREFIX, k)


def party_b(k: int) -> str:
    return _number(B_PREFIX, k)


def stranger(j: int) -> str:
    return _number(STRANGER_PREFIX, j)


def fresh_party(j: int) -> str:
    return _number(FRESH_PREFIX, j)


@dataclass(frozen=True)
class Workload:
    """``bindings`` AXB bindings spread round-robin over ``numbers`` pool numbers."""

    bindings: int
    numbers: int

    def __post_init__(self):
        if self.numbers < 1 or self.bindings < 0:
            raise ValueError("numbers must be at least 1 and bindings not negative")
        if self.bindings > MAX_INDEX or self.numbers > MAX_INDEX:
            raise ValueError(f"at most {MAX_INDEX} bindings and numbers")

    def x_of(self, k: int) -> str:
        return x_number(k % self.numbers)

    def per_number(self, i: int) -> int:
        """How many bindings number ``i`` carries."""
        full, extra = divmod(self.bindings, self.numbers)
        return full + (1 if i < extra else 0)


@dataclass(frozen=True)
class CallSpec:
    """One call to place: who calls which X, and what a correct controller does with it.

    ``expect_to`` is the party the call must be bridged to (showing ``dialed``), or None when
    the call must be refused.
    """

    caller: str
    dialed: str
    expect_to: str | None


def call_mix(workload: Workload, bound_share: float = 0.8, seed: int = 1) -> Iterator[CallSpec]:
    """An endless stream of calls: ``bound_share`` from a bound party, the rest from strangers.

    Bound calls walk a shuffled order of the bindings, A's turn then B's, so one (caller, X)
    pair comes back only once every 2 x bindings bound calls: a run never trips the per-caller
    rate limit unless it is far smaller than its offered load. Strangers never repeat.
    """
    if workload.bindings == 0 and bound_share > 0:
        raise ValueError("bound calls need bindings")
    rng = random.Random(seed)
    order = list(range(workload.bindings))
    rng.shuffle(order)

    bound = strangers = 0
    while True:
        if rng.random() < bound_share:
            yield _bound_call(workload, order, bound)
            bound += 1
        else:
            x = x_number(rng.randrange(workload.numbers))
            yield CallSpec(caller=stranger(strangers % MAX_INDEX), dialed=x, expect_to=None)
            strangers += 1


def _bound_call(workload: Workload, order: list[int], n: int) -> CallSpec:
    k = order[n % len(order)]
    from_a = (n // len(order)) % 2 == 0
    caller, callee = (party_a(k), party_b(k)) if from_a else (party_b(k), party_a(k))
    return CallSpec(caller=caller, dialed=workload.x_of(k), expect_to=callee)
