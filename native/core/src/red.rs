//! RFC 2198 redundant audio data ("RED", `red/48000/2` in WebRTC): the block headers at the start
//! of a RED payload, read once per packet so the router can pass it on (with the blocks' payload
//! types rewritten) or send its primary block alone as plain Opus.
//!
//! ```text
//!  redundant block header (4 bytes, F=1):  |1| block PT | timestamp offset (14) | length (10) |
//!  primary block header (1 byte, F=0):     |0| block PT |
//!  then the redundant blocks' data in header order, then the primary block's data to the end
//! ```
//!
//! Chromium sends one redundant block (its default distance) plus the primary; a packet with
//! nothing to repeat yet carries the primary header alone.

/// Most redundant blocks one packet may carry; more is refused (browsers send 1 or 2). Bounds the
/// header walk and fits the block count in a byte.
pub const MAX_REDUNDANT_BLOCKS: usize = 16;

/// Why a payload is not usable RED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// The headers run past the end of the payload (or there is none).
    Truncated,
    /// The redundant blocks' lengths add up to more than the payload holds after the headers.
    LengthBeyondPayload,
    /// More than `MAX_REDUNDANT_BLOCKS` redundant blocks.
    TooManyBlocks,
    /// No primary data: nothing to play (Opus never produces an empty frame).
    EmptyPrimary,
}

/// What a receiver is sent for one RED packet (the payload type it is sent with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedForward {
    /// The RED payload unchanged.
    AsIs(u8),
    /// The RED payload with its blocks' payload types rewritten (`write_mapped`).
    Rewritten(u8),
    /// The primary block alone, as a packet of its own codec.
    Primary(u8),
    /// Neither RED nor the primary's codec was negotiated.
    NotNegotiated,
}

/// Where the blocks of a RED payload are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedPayload {
    /// Number of redundant blocks; their 4-byte headers are at 0, 4, 8, ... and the primary
    /// block's 1-byte header follows them.
    pub redundant: u8,
    /// Payload type of the primary block.
    pub primary_pt: u8,
    /// Offset of the primary block's data, which runs to the end of the payload.
    pub primary_offset: usize,
}

impl RedPayload {
    /// Reads the block headers; never reads outside `payload`.
    pub fn parse(payload: &[u8]) -> Result<Self, RedError> {
        let mut at = 0;
        let mut data_len = 0usize;
        let mut redundant = 0usize;
        loop {
            let &b = payload.get(at).ok_or(RedError::Truncated)?;
            if b & 0x80 == 0 {
                at += 1;
                let primary_offset = at + data_len;
                if primary_offset > payload.len() {
                    return Err(RedError::LengthBeyondPayload);
                }
                if primary_offset == payload.len() {
                    return Err(RedError::EmptyPrimary);
                }
                return Ok(Self {
                    redundant: redundant as u8,
                    primary_pt: b & 0x7f,
                    primary_offset,
                });
            }
            if redundant == MAX_REDUNDANT_BLOCKS {
                return Err(RedError::TooManyBlocks);
            }
            let h = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
            data_len += (((h[2] & 0x03) as usize) << 8) | h[3] as usize;
            redundant += 1;
            at += 4;
        }
    }

    /// Length of the headers (redundant ones and the primary's).
    pub fn header_len(&self) -> usize {
        self.redundant as usize * 4 + 1
    }

    /// Offsets of the bytes holding each block's payload type (low 7 bits), primary last.
    pub fn pt_offsets(&self) -> impl Iterator<Item = usize> {
        (0..=self.redundant as usize).map(|i| i * 4)
    }

    /// The primary block's data (a whole Opus packet when the primary codec is Opus).
    pub fn primary<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        &payload[self.primary_offset..]
    }

    /// The redundant blocks in header order (oldest first, as senders write them): each one's
    /// payload type, timestamp offset back from the packet's, and data. `payload` is the one
    /// `parse` read.
    pub fn redundant_blocks<'a>(
        &self,
        payload: &'a [u8],
    ) -> impl Iterator<Item = (u8, u16, &'a [u8])> + 'a {
        let mut at = self.header_len();
        (0..self.redundant as usize).map(move |i| {
            let h = &payload[i * 4..i * 4 + 4];
            let offset = (u16::from(h[1]) << 6) | u16::from(h[2] >> 2);
            let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
            let data = &payload[at..at + len];
            at += len;
            (h[0] & 0x7f, offset, data)
        })
    }

    /// Whether every block's payload type maps to itself under `map` (nothing to rewrite), and
    /// whether every one maps at all (`map` gives 0xff for a type the receiver did not negotiate).
    pub fn mapping(&self, payload: &[u8], map: &[u8; 128]) -> (bool, bool) {
        let (mut same, mut all) = (true, true);
        for i in self.pt_offsets() {
            let pt = payload[i] & 0x7f;
            let to = map[pt as usize];
            same &= to == pt;
            all &= to != 0xff;
        }
        (same, all)
    }

    /// How to send this packet to a receiver whose payload types are `map` (the publisher's type →
    /// the receiver's, 0xff: not negotiated) and whose RED type is `red_pt` (0xff: no RED). RED to
    /// a RED receiver, rewritten if its block types differ; else the primary block alone.
    pub fn forward_as(&self, payload: &[u8], map: &[u8; 128], red_pt: u8) -> RedForward {
        if red_pt != 0xff {
            match self.mapping(payload, map) {
                (true, _) => return RedForward::AsIs(red_pt),
                (false, true) => return RedForward::Rewritten(red_pt),
                (false, false) => {}
            }
        }
        match map[self.primary_pt as usize] {
            0xff => RedForward::NotNegotiated,
            pt => RedForward::Primary(pt),
        }
    }

    /// Appends `payload` to `out` with each block's payload type replaced through `map` (the F
    /// bits, offsets, lengths and data unchanged). Every type must map (see `mapping`).
    pub fn write_mapped(&self, payload: &[u8], map: &[u8; 128], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(payload);
        for i in self.pt_offsets() {
            let b = out[start + i];
            out[start + i] = (b & 0x80) | (map[(b & 0x7f) as usize] & 0x7f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundant_blocks_are_read_in_order_with_their_offsets() {
        // Two redundant blocks (1920 and 960 ticks back, 2 and 3 bytes), then the primary.
        let mut p = vec![0x80 | 111, (1920 >> 6) as u8, ((1920 & 0x3f) << 2) as u8, 2];
        p.extend_from_slice(&[
            0x80 | 111,
            (960 >> 6) as u8,
            ((960 & 0x3f) << 2) as u8,
            3,
            111,
        ]);
        p.extend_from_slice(&[0xa1, 0xa2, 0xb1, 0xb2, 0xb3, 0xc1]);
        let r = RedPayload::parse(&p).unwrap();
        let blocks: Vec<_> = r.redundant_blocks(&p).collect();
        assert_eq!(
            blocks,
            [
                (111, 1920, &[0xa1, 0xa2][..]),
                (111, 960, &[0xb1, 0xb2, 0xb3][..])
            ]
        );
        assert_eq!(r.primary(&p), [0xc1]);
    }

    /// RED with one redundant block (PT 111, 960 ticks back, 3 bytes) and a primary of 4 bytes.
    fn chromium_like() -> Vec<u8> {
        let mut p = vec![
            0x80 | 111,
            (960 >> 6) as u8,
            ((960 & 0x3f) << 2) as u8,
            3,
            111,
        ];
        p.extend_from_slice(&[0xa1, 0xa2, 0xa3]);
        p.extend_from_slice(&[0xb1, 0xb2, 0xb3, 0xb4]);
        p
    }

    #[test]
    fn finds_the_primary_after_the_redundant_blocks() {
        let p = chromium_like();
        let r = RedPayload::parse(&p).unwrap();
        assert_eq!(
            r,
            RedPayload {
                redundant: 1,
                primary_pt: 111,
                primary_offset: 8
            }
        );
        assert_eq!(r.primary(&p), &[0xb1, 0xb2, 0xb3, 0xb4]);
        assert_eq!(r.header_len(), 5);
        assert_eq!(r.pt_offsets().collect::<Vec<_>>(), vec![0, 4]);
    }

    #[test]
    fn primary_alone() {
        let p = [111, 0xfc, 0xff];
        let r = RedPayload::parse(&p).unwrap();
        assert_eq!(
            (r.redundant, r.primary_pt, r.primary(&p)),
            (0, 111, &p[1..])
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let p = chromium_like();
        assert_eq!(RedPayload::parse(&[]), Err(RedError::Truncated));
        // Cut inside the redundant header, and before the primary header.
        assert_eq!(RedPayload::parse(&p[..3]), Err(RedError::Truncated));
        assert_eq!(RedPayload::parse(&p[..4]), Err(RedError::Truncated));
        // The redundant block claims more than is there.
        assert_eq!(
            RedPayload::parse(&p[..7]),
            Err(RedError::LengthBeyondPayload)
        );
        let mut long = p.clone();
        long[2] |= 0x03; // length + 768
        assert_eq!(RedPayload::parse(&long), Err(RedError::LengthBeyondPayload));
        assert_eq!(RedPayload::parse(&p[..8]), Err(RedError::EmptyPrimary));
        assert_eq!(RedPayload::parse(&[111]), Err(RedError::EmptyPrimary));
        let many: Vec<u8> = std::iter::repeat_n([0x80 | 111, 0, 0, 0], 17)
            .flatten()
            .chain([111, 1])
            .collect();
        assert_eq!(RedPayload::parse(&many), Err(RedError::TooManyBlocks));
        assert!(
            RedPayload::parse(&many[4..]).is_ok(),
            "16 empty redundant blocks are fine"
        );
    }

    #[test]
    fn rewrites_only_the_block_payload_types() {
        let p = chromium_like();
        let r = RedPayload::parse(&p).unwrap();
        let mut map = [0xffu8; 128];
        assert_eq!(r.mapping(&p, &map), (false, false));
        assert_eq!(r.forward_as(&p, &map, 63), RedForward::NotNegotiated);
        map[111] = 111;
        assert_eq!(r.mapping(&p, &map), (true, true));
        assert_eq!(r.forward_as(&p, &map, 63), RedForward::AsIs(63));
        map[111] = 96;
        assert_eq!(r.mapping(&p, &map), (false, true));
        assert_eq!(r.forward_as(&p, &map, 63), RedForward::Rewritten(63));
        assert_eq!(r.forward_as(&p, &map, 0xff), RedForward::Primary(96));
        let mut out = vec![0xee];
        r.write_mapped(&p, &map, &mut out);
        let mut want = p.clone();
        want[0] = 0x80 | 96;
        want[4] = 96;
        assert_eq!(&out[1..], &want[..]);
        assert_eq!(out[0], 0xee);
    }
}
