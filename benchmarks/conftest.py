"""Collects speed-up figures recorded by benchmarks and prints them as one table at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_ROWS = pytest.StashKey[list[tuple[str, float, float, float, float | None]]]()


@pytest.fixture
def speedup_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(name, baseline_s, fast_s, target=None): one row of the end-of-run ratio table."""
    rows = request.config.stash.setdefault(_ROWS, [])

    def record(name: str, baseline_s: float, fast_s: float, target: float | None = None) -> None:
        rows.append((name, baseline_s, fast_s, baseline_s / fast_s, target))

    return record


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("speed-up vs baseline (same run)")
    terminalreporter.write_line(
        f"{'workload':<44} {'baseline':>12} {'fast':>12} {'speed-up':>9} {'target':>7}"
    )
    for name, base, fast, ratio, target in rows:
        goal = f"{target:.0f}x" if target else "-"
        terminalreporter.write_line(
            f"{name:<44} {base * 1e6:>10.1f}us {fast * 1e6:>10.1f}us {ratio:>8.1f}x {goal:>7}"
        )
