"""Small defences shared by the routes that change something: same-origin checks and rate limits.

Every state-changing request on the visitor network is a POST that must come from a page of this
server: a page elsewhere (another site the phone has open) must not be able to make a visitor's
browser forget them or drive the operator console. Browsers send ``Origin`` on every POST, and
``Sec-Fetch-Site`` where they support it; a request with neither is refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.requests import Request


def same_origin(request: Request) -> bool:
    """True when the request came from a page served by this host (scheme, host and port)."""
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")
    return request.headers.get("sec-fetch-site") == "same-origin"


class RateLimit:
    """At most ``limit`` hits per ``window`` seconds per key (an address); bounded in keys too, so a
    flood of spoofed-looking addresses costs memory proportional to ``max_keys`` only."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> bool:
        """Count one attempt; False when ``key`` is over its limit (the attempt is still counted)."""
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            if len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        hits.append(now)
        return len(hits) <= self.limit

    def retry_after(self, key: str) -> int:
        hits = self._hits.get(key)
        if not hits:
            return 0
        return max(1, int(self.window - (self.clock() - hits[0])) + 1)
