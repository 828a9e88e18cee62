//! Audio lost on the way in, recovered at the server from the next RED packet (RFC 2198).
//!
//! A RED packet repeats the frames before it. A subscriber that receives RED recovers a lost one
//! itself; one that gets the primary block alone (no RED negotiated, or a link too tight for it:
//! `Downlink::update_red_lean`) would hear the loss. So when a RED packet arrives after a gap, the
//! redundant blocks that fill it are put in the gap's sequence numbers (cached, so a late original
//! or its retransmission is a duplicate) and sent to those subscribers, just before the packet
//! itself, only when some subscriber gets the primary alone. A block goes only where its number is
//! certain: the blocks whose timestamps lie strictly between the newest packet held and this one
//! are exactly as many as the numbers missing, or (a gap longer than the redundancy) the gap's
//! frames are evenly spaced and the blocks are the frames right before this one. The publisher's
//! reception report still counts the loss: its own adaptation needs to see it.

use super::*;
use crate::red::{RedForward, RedPayload, MAX_REDUNDANT_BLOCKS};

/// The RED packet that arrived after a gap.
pub(super) struct Carrier<'a> {
    pub red: &'a RedPayload,
    pub payload: &'a [u8],
    /// Its payload type (the publisher's RED type) and RTP timestamp.
    pub pt: u8,
    pub timestamp: u32,
    pub csrc_bytes: &'a [u8],
}

/// Fills the gap between `newest` (the highest extended sequence number held before the carrier)
/// and `ext` (the carrier's) from the carrier's redundant blocks.
#[allow(clippy::too_many_arguments)]
pub(super) fn recover_red(
    t: &mut Track,
    stats: &mut RouterStats,
    downlinks: &mut FastMap<TransportId, Downlink>,
    out: &mut Output,
    c: &Carrier<'_>,
    newest: u64,
    ext: u64,
    now_ms: u64,
) {
    // Longer gaps than this are an outage, not a loss to repair.
    const MOST_GAP: u64 = 1_000;
    let gap = ext - newest;
    if !(2..=MOST_GAP).contains(&gap) {
        return;
    }
    // Nobody who would hear the gap (all receive RED, or none has started): nothing to do, and a
    // frame that was only reordered must still be taken when it comes.
    if !t
        .subs
        .iter()
        .any(|s| s.started && !s.paused && gets_primary(c, s, downlinks))
    {
        return;
    }
    let Some(newest_ts) = t.cache.get(newest).map(|p| p.timestamp) else {
        return;
    };
    let span = c.timestamp.wrapping_sub(newest_ts);
    if span == 0 || span > i32::MAX as u32 {
        return;
    }
    // The blocks between the newest packet held and the carrier, oldest first, one per offset.
    let mut found: [(u8, u16, &[u8]); MAX_REDUNDANT_BLOCKS] = [(0, 0, &[]); MAX_REDUNDANT_BLOCKS];
    let mut n = 0;
    for b in c.red.redundant_blocks(c.payload) {
        let between = b.1 > 0 && u32::from(b.1) < span;
        if between && n < found.len() && !found[..n].iter().any(|f| f.1 == b.1) {
            found[n] = b;
            n += 1;
        }
    }
    let blocks = &mut found[..n];
    blocks.sort_unstable_by_key(|b| std::cmp::Reverse(b.1));
    let missing = gap - 1;
    // As many blocks as numbers missing: they are those numbers, in order. Fewer (a gap longer than
    // the redundancy): the carrier's last frames, if the gap's frames are evenly spaced — the
    // span a whole number of frames per number, the nearest block one frame back and every block
    // a whole number of frames back. Else (DTX in the gap, a frame length change, more blocks
    // than numbers) which number a block is would be a guess.
    let frame = span / gap as u32;
    let spaced = span % gap as u32 == 0
        && frame > 0
        && blocks.last().is_some_and(|b| u32::from(b.1) == frame)
        && blocks.iter().all(|b| u32::from(b.1) % frame == 0);
    let number = |i: usize, offset: u16| -> Option<u64> {
        if n as u64 == missing {
            Some(newest + 1 + i as u64)
        } else if (n as u64) < missing && spaced {
            Some(ext - u64::from(u32::from(offset) / frame))
        } else {
            None
        }
    };
    for (i, &(pt, offset, data)) in blocks.iter().enumerate() {
        let Some(ext_m) = number(i, offset) else {
            return;
        };
        let playable = matches!(
            t.pt_table[pt as usize & 0x7f],
            PtEntry::Media { kind, .. } if kind != CodecKind::Red
        );
        if data.is_empty() || !playable {
            continue;
        }
        let timestamp = c.timestamp.wrapping_sub(u32::from(offset));
        let clock_rate = t.clock_rate(pt);
        let cached = PacketToCache {
            ext_seq: ext_m,
            timestamp,
            marker: false,
            payload_type: pt,
            abs_send_time: None,
            audio_level: None,
            csrc_bytes: c.csrc_bytes,
            payload: data,
        };
        if t.cache.insert_timed(&cached, clock_rate) != Insert::Stored {
            continue;
        }
        arrived(&mut t.missing, ext_m);
        t.stats.red_recovered += 1;
        stats.red_recovered += 1;
        let m = MediaRef {
            c: t.gaps.compress(ext_m),
            timestamp,
            marker: false,
            abs_send_time: None,
            audio_level: None,
            csrc_bytes: c.csrc_bytes,
            payload: data,
            shared: if t.has_sink {
                t.cache.lend(ext_m)
            } else {
                None
            },
        };
        for sub in t.subs.iter_mut() {
            // Never the first packet a subscriber gets; a RED receiver has the block already.
            if sub.paused || !sub.started || m.c < sub.start_c || !gets_primary(c, sub, downlinks) {
                continue;
            }
            let sub_pt = sub.pt_map[pt as usize & 0x7f];
            if sub_pt != 0xff {
                send_one(out, sub, stats, downlinks, sub_pt, &m, None, false, now_ms);
            }
        }
    }
}

/// Whether `sub` is sent the carrier's primary block alone (not RED).
fn gets_primary(
    c: &Carrier<'_>,
    sub: &Subscription,
    downlinks: &FastMap<TransportId, Downlink>,
) -> bool {
    let red_pt = sub.pt_map[c.pt as usize & 0x7f];
    matches!(
        red_forward(c.red, c.payload, sub, red_pt, downlinks),
        RedForward::Primary(_)
    )
}
