"""Slack's Web API rate limits as a rule table, for the fake Slack server.

Slack limits each method "per API method per workspace per app" by Tier
(docs.slack.dev/apis/web-api/rate-limits): Tier 1 1+ per minute, Tier 2 20+, Tier 3 50+,
Tier 4 100+, each tolerating bursts; chat.postMessage is Special: about one message a second
per channel, with short bursts. Over the limit Slack answers HTTP 429 with a ``Retry-After``
header in seconds. Here every tier is a token bucket refilled at the documented floor, holding
one minute's worth (Tier 1: a small burst), so an ordinary test never meets it and a loop does.

The tiers are those of each method's reference page (Facts → Rate limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Tier -> (requests per minute, burst). The floor Slack documents for each tier.
TIERS: dict[int, tuple[float, int]] = {1: (1.0, 5), 2: (20.0, 20), 3: (50.0, 50), 4: (100.0, 100)}

#: Method -> Tier, for every method the fake answers (a test checks none is missing).
#: chat.postMessage is Special: see ``PostRateLimiter``; auth.test and chat.getPermalink are
#: Special ("hundreds of requests per minute"), modelled as Tier 4.
METHOD_TIERS: dict[str, int] = {
    "auth.test": 4,
    "apps.connections.open": 3,  # the current reference; older client libraries say Tier 1
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,
    "conversations.join": 3,
    "users.info": 4,
    "usergroups.list": 2,
    "usergroups.users.list": 2,
    "views.open": 4,
    "views.update": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}
SPECIAL_PER_CHANNEL = ("chat.postMessage",)


@dataclass
class TokenBucket:
    """``burst`` requests at once, refilled at ``rate`` per second."""

    rate: float
    burst: int
    tokens: float = field(default=0.0)
    updated: float | None = None

    def take(self, now: float) -> int:
        """Consume one token; return 0 on success or the whole seconds to wait (>= 1)."""
        if self.updated is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class PostRateLimiter:
    """One TokenBucket per channel, mirroring Slack's per-channel chat.postMessage limit."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("post rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, channel: str, now: float) -> int:
        """0 if the post may go through now, else the Retry-After seconds to send back."""
        bucket = self.buckets.setdefault(channel, TokenBucket(self.rate, self.burst))
        return bucket.take(now)


class RateLimits:
    """The whole table: per-channel buckets for chat.postMessage, one bucket per method
    for the tiered ones. ``tiers`` overrides the rate and burst of a tier (tests that
    exercise the limit itself make it small instead of sending a hundred calls)."""

    def __init__(self, post_rate: float, post_burst: int,
                 tiers: dict[int, tuple[float, int]] | None = None) -> None:
        self.posts = PostRateLimiter(post_rate, post_burst)
        self.tiers = {**TIERS, **(tiers or {})}
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, method: str, channel: str, now: float) -> int:
        """0 if a call to ``method`` (in ``channel``, for per-channel methods) may go through."""
        if method in SPECIAL_PER_CHANNEL:
            return self.posts.retry_after(channel, now)
        tier = METHOD_TIERS.get(method)
        if tier is None:
            return 0  # unknown_method answers it; nothing to count
        per_minute, burst = self.tiers[tier]
        bucket = self.buckets.setdefault(method, TokenBucket(per_minute / 60.0, burst))
        return bucket.take(now)
