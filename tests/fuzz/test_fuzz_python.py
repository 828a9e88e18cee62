"""The Python fuzz targets in pytest: every committed corpus input (seeds and inputs that once
failed) replays cleanly, and hypothesis searches each target from the seeds outward. Depth is set by
FUZZ_EXAMPLES (default 300 per test, a few seconds); `scripts/fuzz.sh` runs the coverage-guided
atheris version of the same targets.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .targets import OFFER_LINES, TARGETS, VITAL_KINDS

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
_settings = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _inputs(target: str) -> list[Path]:
    return sorted((CORPUS / target).glob("*"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    files = _inputs(target)
    assert files, f"no corpus for {target} (tests/fuzz/make_seeds.py writes it)"
    for path in files:
        TARGETS[target](path.read_bytes())


def _mutated(seed: bytes, data: st.DataObject) -> bytes:
    """A seed with a few bytes flipped, cut or inserted: past the first checks more often than noise."""
    out = bytearray(seed)
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if op == 0 and out:
            out[at] ^= data.draw(st.integers(1, 255))
        elif op == 1:
            del out[at : at + data.draw(st.integers(1, 8))]
        else:
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


@_settings
@given(st.data())
def test_vitals_decoders(data: st.DataObject) -> None:
    seeds = [p.read_bytes() for p in _inputs("vitals")]
    seed = data.draw(st.sampled_from(seeds))
    TARGETS["vitals"](_mutated(seed, data))
    TARGETS["vitals"](bytes([data.draw(st.integers(0, len(VITAL_KINDS) - 1))]) + data.draw(st.binary(max_size=64)))


@_settings
@given(st.data())
def test_sdp_handling(data: st.DataObject) -> None:
    seeds = [p.read_bytes() for p in _inputs("sdp")]
    TARGETS["sdp"](_mutated(data.draw(st.sampled_from(seeds)), data))
    # One template line replaced by text made of SDP-ish pieces (numbers at and past every bound).
    number = st.sampled_from(["0", "-1", "127", "128", "255", "256", "65535", "65536", "4294967295",
                              "4294967296", "99999999999999999999", "1e9", "0x10", "", "٣"])
    piece = st.one_of(number, st.sampled_from(["a=", "m=", "b=AS:", "c=IN IP4 ", ":", " ", "/", ";", "=",
                                              "ssrc", "rtpmap", "fmtp", "extmap", "candidate", "apt"]))
    line = "".join(data.draw(st.lists(piece, max_size=10)))
    at = data.draw(st.integers(0, len(OFFER_LINES) - 1))
    TARGETS["sdp"](bytes([2 * (at % 64) + 1]) + line.encode())


@_settings
@given(st.data())
def test_tus_headers(data: st.DataObject) -> None:
    seeds = [p.read_bytes() for p in _inputs("tus")]
    TARGETS["tus"](_mutated(data.draw(st.sampled_from(seeds)), data))
    text = data.draw(st.text(alphabet=st.characters(max_codepoint=255), max_size=80))
    TARGETS["tus"](b"\x00" + "\x00".join([text, text, text]).encode("latin-1"))
