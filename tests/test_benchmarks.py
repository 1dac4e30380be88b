"""The benchmarks' own decisions: a floor is checked on the figure it names."""

from __future__ import annotations

from benchmarks.bench_abuse import all_served_within


def test_abuse_floor_checks_the_slowest_request_not_the_median() -> None:
    fast = [(200, 0.05)] * 9
    assert all_served_within(fast + [(200, 2.9)], 3)
    assert not all_served_within(fast + [(200, 3.5)], 3)  # one of ten too slow: the floor is missed
    assert not all_served_within(fast + [(503, 0.01)], 3)  # one of ten not served
    assert not all_served_within([], 3)
