"""Connection quality levels and their hysteresis, with exact inputs (rooms/quality.py)."""

from __future__ import annotations

import pytest

from mediasrv.rooms.quality import Hysteresis, Quality, Sample, Thresholds, classify

E, G, P, L = Quality.EXCELLENT, Quality.GOOD, Quality.POOR, Quality.LOST


@pytest.mark.parametrize(("sample", "level"), [
    (Sample(), E),  # nothing known
    (Sample(loss=0.0, rtt_s=0.05, jitter_s=0.005), E),
    # loss: up to 2 % excellent, up to 10 % good, more poor (bounds inclusive)
    (Sample(loss=0.02), E), (Sample(loss=0.021), G), (Sample(loss=0.10), G), (Sample(loss=0.101), P),
    # round trip: 300 / 500 ms
    (Sample(rtt_s=0.300), E), (Sample(rtt_s=0.301), G), (Sample(rtt_s=0.500), G), (Sample(rtt_s=0.501), P),
    # jitter: 30 / 100 ms
    (Sample(jitter_s=0.030), E), (Sample(jitter_s=0.031), G), (Sample(jitter_s=0.100), G),
    (Sample(jitter_s=0.101), P),
    # the worst input decides
    (Sample(loss=0.05, rtt_s=0.6, jitter_s=0.0), P), (Sample(loss=0.0, rtt_s=0.4, jitter_s=0.05), G),
    # nothing arriving beats everything else
    (Sample(loss=0.0, rtt_s=0.01, silent=True), L),
    # bandwidth: paused video is poor; a share under the floor (250 kbit/s) at best good
    (Sample(paused=True), P), (Sample(paused=True, loss=0.5), P),
    (Sample(share_bps=199_999), G), (Sample(share_bps=200_000), E),
    (Sample(share_bps=199_999, loss=0.2), P),
    # ...or under 75 % of what the publisher sends of a single-layer stream
    (Sample(share_bps=749_999, demand_bps=1_000_000), G), (Sample(share_bps=750_000, demand_bps=1_000_000), E),
    (Sample(share_bps=2_000_000, demand_bps=1_000_000), E),
])
def test_classify(sample: Sample, level: Quality) -> None:
    assert classify(sample) == level


def test_classify_uses_the_thresholds_given() -> None:
    strict = Thresholds(loss_good=0.0, loss_poor=0.01, video_floor_bps=500_000)
    assert classify(Sample(loss=0.005), strict) == G
    assert classify(Sample(loss=0.02), strict) == P
    assert classify(Sample(share_bps=400_000), strict) == G


def run(h: Hysteresis, samples: list[tuple[float, Quality]]) -> list[Quality]:
    return [h.update(q, t) for t, q in samples]


def test_a_worse_level_is_shown_after_it_held_two_seconds() -> None:
    h = Hysteresis()
    assert run(h, [(0, P), (1, P), (1.99, P), (2, P), (3, E)]) == [E, E, E, P, P]


def test_a_better_level_is_shown_after_it_held_four_seconds() -> None:
    h = Hysteresis(initial=P)
    assert run(h, [(10, E), (11, E), (13.9, E), (14, E)]) == [P, P, P, E]


def test_a_sample_back_at_the_level_cancels_the_change() -> None:
    h = Hysteresis()
    # a one-second dip, again and again: never shown
    assert run(h, [(0, P), (1, E), (2, P), (3, P), (4, E), (5, P)]) == [E] * 6
    # the dip at 5 s started the clock again
    assert run(h, [(6, P), (7, P)]) == [E, P]


def test_the_level_reached_is_the_one_that_held_throughout() -> None:
    h = Hysteresis()
    # good, then poor: two seconds below excellent, but only one at poor: good is shown
    assert run(h, [(0, G), (1, P), (2, P)]) == [E, E, G]
    # from good, poor has to hold its own two seconds
    assert run(h, [(3, P), (4, P), (5, P)]) == [G, G, P]
    # recovering: good then excellent over four seconds shows good (excellent held only part of it)
    assert run(h, [(6, G), (7, E), (8, E), (9, E), (10, E)]) == [P, P, P, P, G]
    # and excellent its own four seconds from there
    assert run(h, [(11, E), (12, E), (14, E), (15, E)]) == [G, G, G, E]


def test_a_change_of_direction_restarts_the_clock() -> None:
    h = Hysteresis(initial=G)
    # better for 3 s, then worse: the worse candidate starts its own 2 s
    assert run(h, [(0, E), (1, E), (2, E), (3, P), (4, P), (5, P)]) == [G, G, G, G, G, P]


def test_lost_is_shown_at_once_and_recovers_after_the_hold() -> None:
    h = Hysteresis()
    assert run(h, [(0, L)]) == [L]
    assert run(h, [(1, E), (2, E), (4.5, E), (5, E)]) == [L, L, L, E]
    # lost while a worse change was pending
    assert run(h, [(6, P), (7, L)]) == [E, L]


def test_hold_times_are_settings() -> None:
    h = Hysteresis(down_hold_s=0, up_hold_s=1)
    assert run(h, [(0, P), (0.5, E), (1.5, E)]) == [P, P, E]
