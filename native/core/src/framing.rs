//! RFC 4571 framing, as ICE-TCP (RFC 6544) carries STUN, DTLS, SRTP and SRTCP over a TCP stream:
//! every packet is preceded by its length, a 16-bit big-endian integer.
//!
//! [`FrameDecoder`] is sans-IO: the caller reads from its socket into [`FrameDecoder::spare`],
//! reports how much arrived with [`FrameDecoder::filled`], and takes whole frames out with
//! [`FrameDecoder::next_frame`], in place (no copy, no allocation after construction). A frame
//! longer than the decoder's limit is an error that ends the stream: nothing after it can be
//! trusted to be a frame boundary.

/// The largest frame the 16-bit length can describe.
pub const MAX_FRAME_LEN: usize = 65_535;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A length field larger than the decoder accepts (the length it announced). The stream is
    /// unusable from here on.
    Oversize(usize),
    /// A payload longer than [`MAX_FRAME_LEN`] cannot be framed.
    TooLong(usize),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::Oversize(n) => write!(f, "frame of {n} bytes is over the limit"),
            FramingError::TooLong(n) => {
                write!(
                    f,
                    "{n} bytes do not fit one RFC 4571 frame (at most {MAX_FRAME_LEN})"
                )
            }
        }
    }
}

impl std::error::Error for FramingError {}

/// Appends `payload` to `out` as one frame.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FramingError> {
    let header = frame_header(payload.len())?;
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The length prefix of a `len`-byte frame.
#[inline]
pub fn frame_header(len: usize) -> Result<[u8; HEADER_LEN], FramingError> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| FramingError::TooLong(len))
}

/// Splits a buffer of whole frames (as written with [`encode_frame`]) into the total length of each
/// frame including its prefix; a cut-off last frame is reported with the bytes present.
pub fn frame_lengths(framed: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= framed.len() {
            return None;
        }
        let rest = &framed[at..];
        let total = if rest.len() < HEADER_LEN {
            rest.len()
        } else {
            (HEADER_LEN + usize::from(u16::from_be_bytes([rest[0], rest[1]]))).min(rest.len())
        };
        at += total;
        Some(total)
    })
}

/// Reassembles frames from a byte stream, in one fixed buffer.
pub struct FrameDecoder {
    buf: Box<[u8]>,
    /// Where the next undelivered byte is.
    start: usize,
    /// End of the bytes received.
    end: usize,
    max_frame: usize,
    failed: Option<FramingError>,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame` bytes (at most [`MAX_FRAME_LEN`]), with a
    /// buffer of `capacity` bytes (raised to hold at least one whole largest frame).
    pub fn new(max_frame: usize, capacity: usize) -> Self {
        let max_frame = max_frame.min(MAX_FRAME_LEN);
        let capacity = capacity.max(HEADER_LEN + max_frame);
        Self {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
            failed: None,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes received and not yet delivered as frames (a partial frame).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Room to read into (the undelivered bytes are moved to the front first when that makes room).
    /// Empty only after an error.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.failed.is_some() {
            return &mut [];
        }
        // Moving the partial frame to the front costs at most one frame's bytes; do it when the
        // room left is under half the buffer, so reads stay large.
        if self.start > 0 && (self.buf.len() - self.end) * 2 < self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`FrameDecoder::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `data` as there is room for; returns how much was taken (the rest must be
    /// pushed again after taking frames out).
    pub fn push(&mut self, data: &[u8]) -> usize {
        let room = self.spare();
        let n = room.len().min(data.len());
        room[..n].copy_from_slice(&data[..n]);
        self.filled(n);
        n
    }

    /// The next whole frame (its payload, writable in place), `Ok(None)` until one has arrived
    /// whole, or the error that ended the stream (again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([
            self.buf[self.start],
            self.buf[self.start + 1],
        ]));
        if len > self.max_frame {
            let e = FramingError::Oversize(len);
            self.failed = Some(e);
            return Err(e);
        }
        if avail < HEADER_LEN + len {
            return Ok(None);
        }
        let from = self.start + HEADER_LEN;
        self.start = from + len;
        if self.start == self.end {
            // Everything delivered: the next read starts at the front again (the frame's bytes stay
            // where they are until then, so the slice handed out is intact).
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&mut self.buf[from..from + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(&mut out, p).unwrap();
        }
        out
    }

    fn drain(d: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut got = Vec::new();
        while let Some(f) = d.next_frame()? {
            got.push(f.to_vec());
        }
        Ok(got)
    }

    /// Feeds `stream` in chunks of the given sizes (cycled), collecting frames as they complete.
    fn decode_in_chunks(
        stream: &[u8],
        chunks: &[usize],
        max: usize,
        cap: usize,
    ) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut d = FrameDecoder::new(max, cap);
        let mut got = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < stream.len() {
            let want = chunks[i % chunks.len()].max(1);
            i += 1;
            let end = (at + want).min(stream.len());
            let mut piece = &stream[at..end];
            while !piece.is_empty() {
                let n = d.push(piece);
                piece = &piece[n..];
                got.extend(drain(&mut d)?);
            }
            at = end;
        }
        got.extend(drain(&mut d)?);
        assert_eq!(d.buffered(), 0, "nothing left over after whole frames");
        Ok(got)
    }

    #[test]
    fn encodes_the_length_big_endian() {
        let mut out = Vec::new();
        encode_frame(&mut out, &[7; 300]).unwrap();
        assert_eq!(&out[..2], &[0x01, 0x2c]);
        assert_eq!(out.len(), 302);
        encode_frame(&mut out, &[]).unwrap();
        assert_eq!(&out[302..], &[0, 0]);
        assert_eq!(frame_header(65_535).unwrap(), [0xff, 0xff]);
        assert_eq!(frame_header(65_536), Err(FramingError::TooLong(65_536)));
        let mut big = Vec::new();
        assert_eq!(
            encode_frame(&mut big, &vec![0; 70_000]),
            Err(FramingError::TooLong(70_000))
        );
        assert!(
            big.is_empty(),
            "nothing written for a payload that cannot be framed"
        );
    }

    #[test]
    fn a_frame_split_byte_by_byte_comes_out_once_whole() {
        let stream = framed(&[b"\x00\x01hello-stun", &[0x80; 1200]]);
        let mut d = FrameDecoder::new(2048, 4096);
        let mut got = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(d.push(&[*b]), 1);
            let frames = drain(&mut d).unwrap();
            if i == 13 {
                assert_eq!(frames, vec![b"\x00\x01hello-stun".to_vec()]);
            } else if i != stream.len() - 1 {
                assert!(frames.is_empty(), "no frame before its last byte ({i})");
            }
            got.extend(frames);
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], vec![0x80; 1200]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn the_length_prefix_itself_may_be_split() {
        let mut d = FrameDecoder::new(2048, 4096);
        d.push(&[0x00]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(&[0x03, b'a', b'b']);
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(b"c");
        assert_eq!(
            d.next_frame().unwrap().map(|f| f.to_vec()),
            Some(b"abc".to_vec())
        );
    }

    #[test]
    fn coalesced_frames_come_out_one_by_one_in_order() {
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10 + i as usize * 50]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        let stream = framed(&refs);
        // one read carries many frames and ends inside one
        assert_eq!(
            decode_in_chunks(&stream, &[3000], 2048, 8192).unwrap(),
            payloads
        );
        assert_eq!(
            decode_in_chunks(&stream, &[stream.len()], 2048, 1 << 16).unwrap(),
            payloads
        );
    }

    #[test]
    fn zero_length_frames_are_frames() {
        let stream = framed(&[b"", b"x", b""]);
        assert_eq!(
            decode_in_chunks(&stream, &[1], 16, 16).unwrap(),
            vec![vec![], b"x".to_vec(), vec![]]
        );
    }

    #[test]
    fn a_frame_of_exactly_the_limit_passes_one_byte_over_ends_the_stream() {
        let ok = framed(&[&[1; 1500]]);
        assert_eq!(decode_in_chunks(&ok, &[700], 1500, 1502).unwrap().len(), 1);
        let over = framed(&[&[1; 1501]]);
        let mut d = FrameDecoder::new(1500, 1502);
        d.push(&over[..2]);
        assert_eq!(d.next_frame(), Err(FramingError::Oversize(1501)));
        // the stream is over: still the error, and no room to read more
        assert_eq!(d.next_frame(), Err(FramingError::Oversize(1501)));
        assert!(d.spare().is_empty());
        assert_eq!(d.push(b"more"), 0);
    }

    #[test]
    fn oversize_is_found_from_the_header_alone_after_good_frames() {
        let mut stream = framed(&[b"good", b"also good"]);
        stream.extend_from_slice(&[0xff, 0xff, 1, 2, 3]);
        let mut d = FrameDecoder::new(2048, 4096);
        d.push(&stream);
        assert_eq!(
            d.next_frame().unwrap().map(|f| f.to_vec()),
            Some(b"good".to_vec())
        );
        assert_eq!(
            d.next_frame().unwrap().map(|f| f.to_vec()),
            Some(b"also good".to_vec())
        );
        assert_eq!(d.next_frame(), Err(FramingError::Oversize(65_535)));
    }

    #[test]
    fn the_limit_is_capped_at_what_16_bits_can_say() {
        let d = FrameDecoder::new(1 << 20, 0);
        assert_eq!(d.max_frame(), MAX_FRAME_LEN);
        let stream = framed(&[&vec![9; MAX_FRAME_LEN]]);
        assert_eq!(
            decode_in_chunks(&stream, &[4096], MAX_FRAME_LEN, 0).unwrap()[0].len(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn frames_are_writable_in_place() {
        let mut d = FrameDecoder::new(64, 128);
        d.push(&framed(&[b"abcd", b"efgh"]));
        let f = d.next_frame().unwrap().unwrap();
        f[0] = b'X';
        assert_eq!(f, b"Xbcd");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"efgh");
        // after the last whole frame the buffer starts over; the slice stayed valid until now
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.spare().len(), 128);
    }

    #[test]
    fn frame_lengths_walks_whole_and_cut_frames() {
        let mut stream = framed(&[b"abc", b"", &[0; 300]]);
        assert_eq!(frame_lengths(&stream).collect::<Vec<_>>(), vec![5, 2, 302]);
        stream.extend_from_slice(&[0, 10, 1, 2]); // a frame cut off after 2 of its 10 bytes
        assert_eq!(
            frame_lengths(&stream).collect::<Vec<_>>(),
            vec![5, 2, 302, 4]
        );
        assert_eq!(frame_lengths(&[7]).collect::<Vec<_>>(), vec![1]);
        assert_eq!(frame_lengths(&[]).count(), 0);
    }

    #[test]
    fn garbage_never_panics_and_is_either_frames_or_one_error() {
        // A fixed garbage stream: a plausible small length, then random bytes with big lengths.
        let mut garbage = vec![0x00, 0x05, 1, 2, 3, 4, 5, 0x10, 0x00];
        garbage.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let mut d = FrameDecoder::new(2048, 4096);
        let mut frames = 0;
        let mut err = None;
        let mut rest = &garbage[..];
        'outer: while !rest.is_empty() {
            let n = d.push(rest);
            rest = &rest[n..];
            loop {
                match d.next_frame() {
                    Ok(Some(_)) => frames += 1,
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break 'outer;
                    }
                }
            }
            if n == 0 {
                break;
            }
        }
        assert_eq!(frames, 1, "the one well-formed frame at the start");
        assert_eq!(err, Some(FramingError::Oversize(0x1000)));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_back_exactly_the_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..40),
            chunks in prop::collection::vec(1usize..4000, 1..20),
            cap in 1502usize..9000,
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
            let stream = framed(&refs);
            prop_assert_eq!(decode_in_chunks(&stream, &chunks, 1500, cap).unwrap(), payloads);
        }

        #[test]
        fn random_bytes_yield_bounded_frames_or_oversize(
            bytes in prop::collection::vec(any::<u8>(), 0..6000),
            chunks in prop::collection::vec(1usize..700, 1..10),
        ) {
            let mut d = FrameDecoder::new(300, 600);
            let (mut at, mut i, mut failed) = (0, 0, false);
            'feed: while at < bytes.len() {
                let end = (at + chunks[i % chunks.len()]).min(bytes.len());
                i += 1;
                let mut piece = &bytes[at..end];
                while !piece.is_empty() {
                    let n = d.push(piece);
                    piece = &piece[n..];
                    loop {
                        match d.next_frame() {
                            Ok(Some(f)) => prop_assert!(f.len() <= 300),
                            Ok(None) => break,
                            Err(FramingError::Oversize(n)) => {
                                prop_assert!(n > 300);
                                failed = true;
                                break 'feed;
                            }
                            Err(e) => prop_assert!(false, "unexpected {e:?}"),
                        }
                    }
                    prop_assert!(n > 0, "a drained decoder always has room");
                }
                at = end;
            }
            // Without an error, what is held back is at most one partial frame.
            prop_assert!(failed || d.buffered() < 2 + 300);
        }
    }
}
