from __future__ import annotations

from ensemble_core import Ensemble
from ensemble_core.members.breaker import BreakerPolicy, CircuitBreaker, CircuitOpenError
from ensemble_core.members.scripted import ScriptedMember


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_lets_one_trial_through():
    clock = _Clock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, reset_after_s=10), clock=clock)
    breaker.check("m")
    breaker.failure()
    breaker.check("m")
    breaker.failure()
    assert breaker.state == "open"
    try:
        breaker.check("m")
        raise AssertionError("should be open")
    except CircuitOpenError as err:
        assert "member 'm'" in str(err) and "2 consecutive failures" in str(err)
    clock.now = 11
    assert breaker.state == "half-open"
    breaker.check("m")  # the one trial
    try:
        breaker.check("m")
        raise AssertionError("only one trial at a time")
    except CircuitOpenError:
        pass
    breaker.success()
    assert breaker.state == "closed"


def test_a_failed_trial_reopens_at_once():
    clock = _Clock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, reset_after_s=5), clock=clock)
    for _ in range(3):
        breaker.failure()
    clock.now = 6
    breaker.check("m")
    breaker.failure()
    assert breaker.state == "open"


def test_ensemble_stops_calling_a_member_that_keeps_failing():
    flaky = ScriptedMember(
        "flaky", [RuntimeError("down")], breaker=BreakerPolicy(failure_threshold=2, reset_after_s=60)
    )
    backup = ScriptedMember("backup", ["ok"])
    ens = Ensemble([flaky, backup])
    for _ in range(4):
        assert ens.run("q").text == "ok"
    assert len(flaky.calls) == 2  # the third and fourth requests skipped it
    last = ens.run("q").trace.calls[0]
    assert not last.ok and "circuit open" in last.error


def test_request_errors_do_not_open_the_circuit():
    from ensemble_core import ContextWindowError

    member = ScriptedMember("m", [ContextWindowError("m", 10, 5)], breaker=BreakerPolicy(failure_threshold=1))
    ens = Ensemble([member, ScriptedMember("b", ["ok"])])
    ens.run("q")
    ens.run("q")
    assert member.breaker.state == "closed" and len(member.calls) == 2
