"""A token bucket per customer: ``rate_limit_per_s`` tokens a second, up to ``burst``.

Buckets live in this process only: with several API processes behind a balancer each holds
its own, so the effective limit is per process. That is a known, accepted shortcoming: the
limit protects the database from one runaway client, not a billing quota.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PbxControlError


class RateLimited(PbxControlError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, retry_after_s: float):
        super().__init__("too many requests for this customer; retry later")
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Thread-safe: FastAPI runs the synchronous dependencies in a thread pool."""

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.per_s = float(per_s)
        self.burst = max(1, int(burst))
        self.clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, customer_id: int) -> None:
        """Spend one token of the customer's bucket or raise RateLimited."""
        if self.per_s <= 0:
            return
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(customer_id, _Bucket(self.burst, now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.per_s)
            bucket.stamp = now
            if bucket.tokens < 1:
                raise RateLimited((1 - bucket.tokens) / self.per_s)
            bucket.tokens -= 1
