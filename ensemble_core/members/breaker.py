"""A circuit breaker per member: after `failure_threshold` consecutive failures the member is not called for
`reset_after_s` seconds; then one trial call is let through (half-open), and a success closes the circuit.

It keeps a failing member from slowing every request down while it is down, and tries it again later."""

from __future__ import annotations

import threading
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import EnsembleError

BreakerState = Literal["closed", "open", "half-open"]


class BreakerPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    reset_after_s: float = Field(
        default=30.0, gt=0, description="seconds the circuit stays open before a trial"
    )


class CircuitOpenError(EnsembleError, RuntimeError):
    """The member is skipped because it failed too often recently."""


class CircuitBreaker:
    """Thread-safe breaker state for one member."""

    def __init__(self, policy: BreakerPolicy | None = None, clock=time.monotonic):
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.policy.reset_after_s:
            return "half-open"
        return "open"

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a trial call through (0 when it is closed or half-open)."""
        with self._lock:
            if self._state() != "open":
                return 0.0
            assert self._opened_at is not None
            return max(0.0, self.policy.reset_after_s - (self._clock() - self._opened_at))

    def check(self, member: str) -> None:
        """Raise `CircuitOpenError` if the member must not be called now; let one trial through when
        half-open."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return
            if state == "half-open" and not self._trial_running:
                self._trial_running = True
                return
            assert self._opened_at is not None
            wait = max(0.0, self.policy.reset_after_s - (self._clock() - self._opened_at))
            raise CircuitOpenError(
                f"circuit open for member {member!r} after {self._failures} consecutive failures; "
                f"next trial in {wait:.0f} s"
            )

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def release(self) -> None:
        """A call ended without saying anything about the member's health (a bad request): free the trial."""
        with self._lock:
            self._trial_running = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._failures >= self.policy.failure_threshold or self._opened_at is not None:
                self._opened_at = self._clock()
