"""A small in-process token bucket per client, for the public knowledge API.

One bucket per client IP: `burst` requests at once, refilled at `rate_per_minute`. In a
deployment with several processes each process limits on its own (documented); a shared
limiter belongs in front of them (the load balancer) at that scale.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pydantic_settings import BaseSettings, SettingsConfigDict


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIYUN_KNOWLEDGE_", env_file=".env", extra="ignore")

    rate_per_minute: float = 120.0
    burst: int = 30
    rate_limit_enabled: bool = True
    max_clients: int = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    def __init__(self, rate_per_minute: float, burst: int, max_clients: int = 100_000, clock=time.monotonic) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> tuple[bool, float]:
        """(allowed, seconds until the next token)."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get(client)
            if b is None:
                if len(self._buckets) >= self.max_clients:
                    self._evict(now)
                b = self._buckets[client] = _Bucket(self.burst, now)
            b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.rate)
            b.updated = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return True, 0.0
            wait = (1.0 - b.tokens) / self.rate if self.rate > 0 else 60.0
            return False, wait

    def _evict(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for k in full or list(self._buckets)[: len(self._buckets) // 2]:
            self._buckets.pop(k, None)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


_limiter: TokenBucketLimiter | None = None


def get_limiter() -> TokenBucketLimiter | None:
    global _limiter
    settings = RateLimitSettings()
    if not settings.rate_limit_enabled:
        return None
    if _limiter is None:
        _limiter = TokenBucketLimiter(settings.rate_per_minute, settings.burst, settings.max_clients)
    return _limiter


def set_limiter(limiter: TokenBucketLimiter | None) -> None:
    """Replace the process limiter (tests, or configuration reloaded at start-up)."""
    global _limiter
    _limiter = limiter
