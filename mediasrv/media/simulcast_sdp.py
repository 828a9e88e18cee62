"""Simulcast in SDP (RFC 8853 `a=simulcast`, RFC 8851 `a=rid`): what aiortc cannot negotiate.

Chromium offers simulcast as `a=rid:<id> send` lines and `a=simulcast:send <id>;<id>;...` in a
video m-section, plus the RID and repaired-RID header extensions that name each packet's encoding
(there are no `a=ssrc` lines for the encodings: SSRCs are learned from the first packets). Older
offers (and some clients) signal `a=ssrc-group:SIM` instead. aiortc ignores all of this and answers
without it, and the browser then sends one encoding only.

`strip_offer` takes those lines out of an offer before aiortc sees it and remembers them per mid;
`add_to_answer` puts the receiving side of them into aiortc's answer (`a=rid:<id> recv`,
`a=simulcast:recv ...`, the two header extensions with the offer's ids), so the browser sends every
encoding. The repaired-RID extension id (or, with SIM groups, the FID groups' RTX SSRCs) goes to
the router, which then NACKs losses per layer and takes the repairs from the layers' RTX streams. Layers are numbered in the order of the `a=simulcast` list, lowest resolution first (the
order Chromium sends `sendEncodings` in when they are listed from the smallest, as the demo does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mediasrv.media.sdp import SdpError

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS = 3
MAX_RID_LEN = 16  # libwebrtc refuses longer ones too
MAX_SSRC = 0xFFFF_FFFF
_RID_ID = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_RID_LEN}}}$")
_EXTMAP = re.compile(r"^a=extmap:(\d{1,6})(?:/\w+)? (\S+)")


@dataclass
class SimulcastMedia:
    """One m-section's simulcast offer."""

    mid: str
    # Layer order: index 0 is the lowest resolution. A paused layer ("~q") is listed, marked paused.
    rids: list[str] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)
    rid_ext: int | None = None
    repaired_rid_ext: int | None = None
    # `a=ssrc-group:SIM` members (lowest first), when the offer lists SSRCs instead of rids.
    sim_ssrcs: list[int] = field(default_factory=list)
    # The RTX SSRC paired with each of them by `a=ssrc-group:FID` (0: none), in the same order.
    sim_rtx_ssrcs: list[int] = field(default_factory=list)

    def layer_of_rid(self, rid: str) -> int | None:
        return self.rids.index(rid) if rid in self.rids else None


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of the m-sections."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    return list(zip(starts, [*starts[1:], len(lines)], strict=False))  # none without an m-line


def _mid(lines: list[str], start: int, end: int) -> str | None:
    for line in lines[start:end]:
        if line.startswith("a=mid:"):
            return line[6:].strip()
    return None


def _split(sdp: str) -> tuple[list[str], str]:
    eol = "\r\n" if "\r\n" in sdp else "\n"
    return sdp.rstrip("\r\n").split(eol), eol


def _parse_simulcast(value: str, where: str) -> list[tuple[str, bool]]:
    """`send q;h;f` (alternatives after commas: the first is taken) -> [(rid, paused)]."""
    parts = value.split()
    if len(parts) != 2 or parts[0] != "send":
        raise SdpError(f"{where}: a=simulcast must be 'send <rid>;<rid>...' (we only receive simulcast)")
    out = []
    for choice in parts[1].split(";"):
        rid = choice.split(",")[0]
        paused = rid.startswith("~")
        rid = rid.removeprefix("~")
        if not _RID_ID.match(rid):
            raise SdpError(f"{where}: simulcast rid {rid[:20]!r} is not 1-{MAX_RID_LEN} letters/digits/-/_")
        out.append((rid, paused))
    return out


def strip_offer(sdp: str) -> tuple[str, dict[str, SimulcastMedia]]:
    """The offer without simulcast lines, and what they said per mid (only m-sections with simulcast)."""
    lines, eol = _split(sdp)
    found: dict[str, SimulcastMedia] = {}
    drop: set[int] = set()
    for start, end in _sections(lines):
        mid = _mid(lines, start, end)
        where = f"m-line mid={mid!r}"
        rid_lines: dict[str, int] = {}
        sim: list[tuple[str, bool]] | None = None
        sim_ssrcs: list[int] = []
        fid: dict[int, int] = {}  # media SSRC -> its RTX SSRC
        exts: dict[str, int] = {}
        for i in range(start, end):
            line = lines[i]
            if line.startswith("a=rid:"):
                rid, _, rest = line[6:].partition(" ")
                if rest.split(" ")[0] != "send":
                    raise SdpError(f"{where}: a=rid:{rid[:20]} must be 'send' in an offer to publish")
                rid_lines[rid] = i
                drop.add(i)
            elif line.startswith("a=simulcast:"):
                if sim is not None:
                    raise SdpError(f"{where}: more than one a=simulcast line")
                sim = _parse_simulcast(line[12:].strip(), where)
                drop.add(i)
            elif line.startswith("a=ssrc-group:SIM "):
                try:
                    sim_ssrcs = [int(x) for x in line.split()[1:]]
                except ValueError:
                    sim_ssrcs = []
                if not sim_ssrcs or len(set(sim_ssrcs)) != len(sim_ssrcs) or not all(
                        0 <= x <= MAX_SSRC for x in sim_ssrcs):
                    raise SdpError(f"{where}: a=ssrc-group:SIM members must be distinct SSRC numbers")
                drop.add(i)
            elif line.startswith("a=ssrc-group:FID "):
                pair = line.split()[1:]
                if len(pair) == 2 and all(x.isdigit() and int(x) <= MAX_SSRC for x in pair):
                    fid[int(pair[0])] = int(pair[1])  # kept for aiortc; anything else is its to judge
            elif (m := _EXTMAP.match(line)) and m.group(2) in (RID_URI, REPAIRED_RID_URI):
                exts[m.group(2)] = int(m.group(1))
        if sim is None and not sim_ssrcs:
            if rid_lines:
                raise SdpError(f"{where}: a=rid without a=simulcast")
            continue
        if mid is None:
            raise SdpError("a simulcast m-line has no a=mid")
        rtx = [fid.get(x, 0) for x in sim_ssrcs]
        if any(x and (x in sim_ssrcs or rtx.count(x) > 1) for x in rtx):
            raise SdpError(f"{where}: a=ssrc-group:FID pairs a SIM layer with another layer's SSRC")
        media = SimulcastMedia(mid, rid_ext=exts.get(RID_URI), repaired_rid_ext=exts.get(REPAIRED_RID_URI),
                               sim_ssrcs=sim_ssrcs, sim_rtx_ssrcs=rtx if any(rtx) else [])
        for rid, paused in sim or []:
            if rid not in rid_lines:
                raise SdpError(f"{where}: a=simulcast names rid {rid!r} without its a=rid line")
            if rid in media.rids:
                raise SdpError(f"{where}: rid {rid!r} listed twice in a=simulcast")
            media.rids.append(rid)
            if paused:
                media.paused.add(rid)
        layers = len(media.rids) or len(media.sim_ssrcs)
        if layers > MAX_LAYERS:
            raise SdpError(f"{where}: {layers} simulcast layers; at most {MAX_LAYERS} are accepted")
        if media.rids and media.rid_ext is None:
            raise SdpError(f"{where}: rid simulcast needs the {RID_URI} header extension")
        # The router reads the RID from this id: RFC 8285's 1-255, and not 15 (the one-byte form's end).
        if media.rid_ext is not None and not (1 <= media.rid_ext <= 255 and not (media.rids and media.rid_ext == 15)):
            raise SdpError(f"{where}: RID header extension id {str(media.rid_ext)[:6]} is not usable")
        found[mid] = media
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return eol.join(kept) + eol, found


def add_to_answer(answer: str, offers: dict[str, SimulcastMedia]) -> str:
    """aiortc's answer with the receiving side of each simulcast offer put back."""
    if not offers:
        return answer
    lines, eol = _split(answer)
    out: list[str] = []
    sections = _sections(lines)
    out.extend(lines[: sections[0][0]] if sections else lines)
    for start, end in sections:
        section = lines[start:end]
        media = offers.get(_mid(lines, start, end) or "")
        if media is not None and media.rids and not section[0].startswith("m=video 0 "):
            present = {m.group(2) for line in section if (m := _EXTMAP.match(line))}
            extra = [f"a=extmap:{ext} {uri}" for uri, ext in ((RID_URI, media.rid_ext),
                                                              (REPAIRED_RID_URI, media.repaired_rid_ext))
                     if ext is not None and uri not in present]
            # Extensions go after the last extmap (or after a=mid), rid/simulcast at the end.
            at = max((i for i, line in enumerate(section) if line.startswith(("a=extmap:", "a=mid:"))),
                     default=len(section) - 1) + 1
            section = section[:at] + extra + section[at:]
            section += [f"a=rid:{rid} recv" for rid in media.rids]
            section.append("a=simulcast:recv " + ";".join(
                ("~" if rid in media.paused else "") + rid for rid in media.rids))
        out.extend(section)
    return eol.join(out) + eol
