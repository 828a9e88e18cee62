"""Per-connection message rate limit for the room WebSocket (see docs/signaling.md, "Rate limit").

A token bucket admits `rate_per_s` messages a second with bursts of up to `burst`. Each refused
message is a strike; one strike is forgiven per second, so a client that bursts now and then is
never disconnected, while one that keeps flooding reaches `close_after` strikes within seconds.
The clock is passed in, so the arithmetic is testable without sleeping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Exported by mediasrv.api.metrics: "refused" messages and "closed" connections.
RATE_LIMITED: Counter[str] = Counter()
STRIKES_FORGIVEN_PER_S = 1.0


@dataclass
class MessageRateLimit:
    rate_per_s: float  # 0 = unlimited
    burst: int
    close_after: int  # strikes that end the connection
    now: float  # the clock's value at creation (e.g. loop.time())
    tokens: float = field(init=False)
    strikes: float = field(init=False, default=0.0)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.burst < 1 or self.close_after < 1:
            raise ValueError("rate_per_s must be >= 0, burst and close_after >= 1")
        self.tokens = float(self.burst)
        self._last = self.now

    def admit(self, now: float) -> bool:
        """True if a message arriving at `now` may be handled; False means refuse it (a strike)."""
        if self.rate_per_s == 0:
            return True
        elapsed = max(0.0, now - self._last)  # a clock that steps back never mints tokens
        self._last = max(self._last, now)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
        self.strikes = max(0.0, self.strikes - elapsed * STRIKES_FORGIVEN_PER_S)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.strikes += 1.0
        return False

    @property
    def exhausted(self) -> bool:
        """The client kept flooding: close the connection."""
        return self.strikes >= self.close_after
