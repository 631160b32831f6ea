"""Login and registration throttling, and the bound on password hashes computed at once.

Moving windows (the `limits` library), counted per client address and per account:
- any login attempt: `login_per_address` per address (e.g. 20/minute);
- failed logins per (e-mail address, client address): `login_failures_per_account_address` (e.g. 10/15
  minutes), then 429 for that pair only: guessing from one address is stopped, and the owner at another
  address is not locked out (OWASP ASVS 2.2.1);
- failed logins per e-mail address from all client addresses: past `login_failures_per_account`, every
  further attempt for that account is slowed down by `slowdown_s` (never refused), so guessing one
  account's password from many addresses is slowed down too;
- registrations and invitation redemptions: `register_per_address` per address (e.g. 10/hour).
Over a limit: 429 `too_many_requests` with Retry-After, before any database work or password hashing.
The counters live in memory (one API process) or, with `throttle_storage_url` (e.g. the Redis URL), shared by
every API process. Password hashing (argon2id, 64 MiB and ~0.1-0.3 s each) runs at most
`max_concurrent_password_hashes` at a time; a request that waits longer than 10 s for its turn gets 429.
Must not import FastAPI.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.errors import TooManyRequests

T = TypeVar("T")
HASH_WAIT_S = 10.0


class Throttle:
    def __init__(
        self,
        *,
        storage_url: str = "memory://",
        login_per_address: str = "20/minute",
        login_failures_per_account: str = "10/15minutes",
        login_failures_per_account_address: str = "10/15minutes",
        slowdown_s: float = 1.0,
        register_per_address: str = "10/hour",
        max_concurrent_hashes: int = 2,
    ) -> None:
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_url))
        self.login_per_address = parse(login_per_address)
        self.login_failures_per_account = parse(login_failures_per_account)
        self.login_failures_per_pair = parse(login_failures_per_account_address)
        self.slowdown_s = slowdown_s
        self.register_per_address = parse(register_per_address)
        self._hashes = threading.BoundedSemaphore(max_concurrent_hashes)

    def _refuse(self, item: RateLimitItem, keys: tuple[str, ...], what: str) -> None:
        reset = self.limiter.get_window_stats(item, *keys).reset_time
        wait = math.ceil(reset - time.time())
        raise TooManyRequests(f"too many {what}; try again in {max(1, wait)} s", retry_after_s=wait)

    def login_attempt(self, *, address: str, email: str) -> float:
        """Count one login attempt from `address`; refuse while this (account, address) pair has too many
        recent failures. Returns the seconds to slow this attempt down by (the account's failures from all
        addresses), which the caller waits before answering."""
        if not self.limiter.hit(self.login_per_address, "login", address):
            self._refuse(self.login_per_address, ("login", address), "login attempts from your address")
        if not self.limiter.test(self.login_failures_per_pair, "login-failed", email, address):
            pair = ("login-failed", email, address)
            self._refuse(self.login_failures_per_pair, pair, "failed logins for this account from your address")
        if not self.limiter.test(self.login_failures_per_account, "login-failed-any", email):
            return self.slowdown_s
        return 0.0

    def login_failed(self, *, email: str, address: str) -> None:
        self.limiter.hit(self.login_failures_per_pair, "login-failed", email, address)
        self.limiter.hit(self.login_failures_per_account, "login-failed-any", email)

    def registration(self, *, address: str) -> None:
        if not self.limiter.hit(self.register_per_address, "register", address):
            self._refuse(self.register_per_address, ("register", address), "registrations from your address")

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """One of the bounded slots for an argon2 computation."""
        if not self._hashes.acquire(timeout=HASH_WAIT_S):
            raise TooManyRequests("the server is busy checking passwords; try again shortly", retry_after_s=2)
        try:
            yield
        finally:
            self._hashes.release()

    def hashed(self, compute: Callable[[], T]) -> T:
        with self.hashing():
            return compute()
