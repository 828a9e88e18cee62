//! RFC 4571 framing as ICE-TCP connections are read: a byte stream arriving in chunks of any size
//! is reassembled by `FrameDecoder` into exactly the frames a plain walk over the whole stream finds,
//! in order and intact, up to the first oversize length (which ends the stream for good); a partial
//! frame always fits, so reading never stalls.
//!
//! Input: a byte choosing the frame limit, one choosing the buffer size, one seeding the chunk
//! sizes, then the stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::framing::{frame_lengths, FrameDecoder, FramingError, HEADER_LEN};

const LIMITS: [usize; 6] = [0, 1, 100, 1500, 9000, 65_535];
const CAPACITIES: [usize; 4] = [0, 64, 4096, 200_000];

/// The frames of `stream` and the error ending it, by walking it whole.
fn reference(stream: &[u8], limit: usize) -> (Vec<&[u8]>, Option<FramingError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while stream.len() - at >= HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
        if len > limit {
            return (frames, Some(FramingError::Oversize(len)));
        }
        if stream.len() - at - HEADER_LEN < len {
            break;
        }
        frames.push(&stream[at + HEADER_LEN..at + HEADER_LEN + len]);
        at += HEADER_LEN + len;
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let [limit, cap, mut seed, ref stream @ ..] = *data else {
        return;
    };
    let limit = LIMITS[limit as usize % LIMITS.len()];
    let mut dec = FrameDecoder::new(limit, CAPACITIES[cap as usize % CAPACITIES.len()]);
    let (want, want_err) = reference(stream, limit);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut err = None;
    let mut at = 0;
    'stream: while at < stream.len() {
        seed = seed.wrapping_mul(37).wrapping_add(11);
        let chunk = &stream[at..stream.len().min(at + 1 + seed as usize * 3)];
        let taken = dec.push(chunk);
        at += taken;
        let mut produced = false;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    got.push(f.to_vec());
                    produced = true;
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    assert_eq!(dec.next_frame(), Err(e), "the error sticks");
                    assert!(dec.spare().is_empty());
                    break 'stream;
                }
            }
        }
        assert!(
            taken > 0 || produced,
            "stalled: nothing taken, no frame out"
        );
        // What stays is less than a whole frame: a whole one would have come out.
        assert!(dec.buffered() < HEADER_LEN + limit);
    }
    if err.is_none() {
        // The stream may end inside a frame; an oversize length in its last bytes still shows.
        if let Err(e) = dec.next_frame() {
            err = Some(e);
        }
    }
    assert_eq!(got.len(), want.len(), "frame count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_slice(), *w);
    }
    assert_eq!(err, want_err);
    // The writer's view of the same stream: lengths of whole frames, a cut-off tail last.
    let total: usize = frame_lengths(stream).sum();
    assert_eq!(total, stream.len());
});
