"""benchmarks/speed_probe.py: the work it times is the same work every time (its CPU time is read
in benchmarks/swap_floor.py, never asserted)."""

from benchmarks import speed_probe


def test_the_probe_does_the_same_fixed_work_every_time() -> None:
    assert speed_probe._work(2_000) == speed_probe._work(2_000) > 0
