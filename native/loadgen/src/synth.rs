//! Synthetic media: RTP packets carrying a VP8 (RFC 7741) or Opus (RFC 7587) payload of realistic
//! size and rate. Payload bytes are filler, except that every payload ends with a send stamp
//! ([`STAMP_MAGIC`] + microseconds on the generator's clock) so the receiver can measure latency.

/// Marks a payload that ends with a send stamp.
pub const STAMP_MAGIC: [u8; 4] = *b"MSLG";
/// Magic plus a big-endian u64 of microseconds.
pub const STAMP_LEN: usize = 12;
/// Payload bytes per packet, leaving room for the RTP header, an extension and the SRTP trailer
/// inside a 1200-byte datagram (what browsers aim for).
pub const MAX_PAYLOAD: usize = 1100;
/// Buffer size callers must hand to [`SendStream::next_frame`].
pub const PACKET_BUF: usize = 1500;

const VIDEO_CLOCK: u64 = 90_000;
const AUDIO_CLOCK: u64 = 48_000;
const AUDIO_FRAME_US: u64 = 20_000;
/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_FACTOR: u64 = 4;

/// xorshift64*: cheap, deterministic per seed, good enough for frame-size jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `base` varied uniformly by ±`percent` %.
    pub fn vary(&mut self, base: u64, percent: u64) -> u64 {
        let span = base * percent / 100;
        if span == 0 {
            return base;
        }
        base - span + self.next_u64() % (2 * span + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
}

/// One outgoing RTP stream of a simulated client.
#[derive(Debug, Clone)]
pub struct SendStream {
    pub kind: MediaKind,
    pub ssrc: u32,
    pub payload_type: u8,
    /// One-byte header extension carrying the MID (RFC 8843), when negotiated.
    pub mid_ext: Option<(u8, Vec<u8>)>,
    seq: u16,
    ts_base: u32,
    frame_no: u64,
    frame_interval_us: u64,
    clock_per_frame: u64,
    delta_bytes: u64,
    keyframe_every: u64,
    picture_id: u16,
    pub next_due_us: u64,
    pub force_keyframe: bool,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub keyframes_sent: u64,
    /// Video: follow the REMB the server sends for this SSRC, as a browser's encoder does (never
    /// above the configured rate, never below [`MIN_VIDEO_KBPS`]).
    pub follow_remb: bool,
    /// Video: the configured rate and the one currently sent.
    max_kbps: u32,
    pub target_kbps: u32,
    fps: u64,
    rng: Rng,
}

/// The lowest video rate a REMB can bring a following stream to.
pub const MIN_VIDEO_KBPS: u32 = 30;

/// Average delta-frame size for `kbps` at `fps` with a keyframe every `gop` frames.
fn delta_bytes_for(kbps: u32, fps: u64, gop: u64) -> u64 {
    let avg = (u64::from(kbps) * 1000 / 8 / fps).max(64);
    // gop frames = 1 keyframe of KEYFRAME_FACTOR deltas + (gop - 1) deltas, averaging `avg`.
    (avg * gop / (gop + KEYFRAME_FACTOR - 1)).max(32)
}

impl SendStream {
    /// VP8 at `kbps` and `fps`, a keyframe every `keyframe_interval_s` (and the first frame).
    #[allow(clippy::too_many_arguments)]
    pub fn video(
        ssrc: u32,
        payload_type: u8,
        kbps: u32,
        fps: u32,
        keyframe_interval_s: f64,
        start_us: u64,
        seed: u64,
    ) -> Self {
        let fps = u64::from(fps.clamp(1, 120));
        let gop = ((keyframe_interval_s.max(0.1) * fps as f64) as u64).max(1);
        let delta = delta_bytes_for(kbps, fps, gop);
        let mut rng = Rng::new(seed);
        Self {
            kind: MediaKind::Video,
            ssrc,
            payload_type,
            mid_ext: None,
            seq: rng.next_u64() as u16,
            ts_base: rng.next_u64() as u32,
            frame_no: 0,
            frame_interval_us: 1_000_000 / fps,
            clock_per_frame: VIDEO_CLOCK / fps,
            delta_bytes: delta,
            keyframe_every: gop,
            picture_id: rng.next_u64() as u16 & 0x7fff,
            next_due_us: start_us,
            force_keyframe: false,
            packets_sent: 0,
            bytes_sent: 0,
            keyframes_sent: 0,
            follow_remb: false,
            max_kbps: kbps,
            target_kbps: kbps,
            fps,
            rng,
        }
    }

    /// A REMB of `bps` for this stream: a following video stream sends that much from its next
    /// frame (within [`MIN_VIDEO_KBPS`] and its configured rate).
    pub fn on_remb(&mut self, bps: u64) {
        if !self.follow_remb || self.kind != MediaKind::Video {
            return;
        }
        let kbps = (bps / 1000).clamp(u64::from(MIN_VIDEO_KBPS), u64::from(self.max_kbps)) as u32;
        if kbps != self.target_kbps {
            self.target_kbps = kbps;
            self.delta_bytes = delta_bytes_for(kbps, self.fps, self.keyframe_every);
        }
    }

    /// Opus, 20 ms frames of about 32 kbit/s.
    pub fn audio(ssrc: u32, payload_type: u8, start_us: u64, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0xA0D1_0000);
        Self {
            kind: MediaKind::Audio,
            ssrc,
            payload_type,
            mid_ext: None,
            seq: rng.next_u64() as u16,
            ts_base: rng.next_u64() as u32,
            frame_no: 0,
            frame_interval_us: AUDIO_FRAME_US,
            clock_per_frame: AUDIO_CLOCK * AUDIO_FRAME_US / 1_000_000,
            delta_bytes: 80,
            keyframe_every: 0,
            picture_id: 0,
            next_due_us: start_us,
            force_keyframe: false,
            packets_sent: 0,
            bytes_sent: 0,
            keyframes_sent: 0,
            follow_remb: false,
            max_kbps: 0,
            target_kbps: 0,
            fps: 50,
            rng,
        }
    }

    pub fn frame_interval_us(&self) -> u64 {
        self.frame_interval_us
    }

    /// Build the packets of the next frame into `buf` one at a time and hand each to `emit` as
    /// `(buf, rtp_len)`; `buf` keeps [`PACKET_BUF`] bytes so SRTP can be applied in place.
    /// `now_us` is stamped into every payload. Advances the schedule by one frame interval.
    pub fn next_frame(
        &mut self,
        now_us: u64,
        buf: &mut [u8],
        emit: &mut dyn FnMut(&mut [u8], usize),
    ) {
        let ts = self
            .ts_base
            .wrapping_add((self.frame_no * self.clock_per_frame) as u32);
        match self.kind {
            MediaKind::Audio => {
                let size = self.rng.vary(self.delta_bytes, 15) as usize + STAMP_LEN;
                let len = self.write_header(buf, ts, false);
                let end = len + size;
                buf[len] = 0xFC; // TOC: CELT fullband 20 ms, one frame
                fill(&mut buf[len + 1..end - STAMP_LEN], self.seq);
                stamp(&mut buf[end - STAMP_LEN..end], now_us);
                self.sent(end);
                emit(buf, end);
            }
            MediaKind::Video => {
                let key = self.force_keyframe || self.frame_no.is_multiple_of(self.keyframe_every);
                self.force_keyframe = false;
                let base = if key {
                    self.delta_bytes * KEYFRAME_FACTOR
                } else {
                    self.delta_bytes
                };
                let mut remaining = self.rng.vary(base, 25) as usize;
                let pid = self.picture_id;
                let mut first = true;
                while remaining > 0 || first {
                    // per packet: 4-byte descriptor, then frame bytes, then the stamp
                    let room = MAX_PAYLOAD - 4 - STAMP_LEN;
                    let chunk = remaining.min(room).max(if first { 10 } else { 1 });
                    remaining = remaining.saturating_sub(chunk);
                    let last = remaining == 0;
                    let mut pos = self.write_header(buf, ts, last);
                    // RFC 7741 descriptor: X, S on the first packet, PID 0; I with a 15-bit picture id
                    buf[pos] = 0x80 | if first { 0x10 } else { 0 };
                    buf[pos + 1] = 0x80;
                    buf[pos + 2] = 0x80 | (pid >> 8) as u8;
                    buf[pos + 3] = pid as u8;
                    pos += 4;
                    let end = pos + chunk + STAMP_LEN;
                    if first {
                        write_vp8_header(&mut buf[pos..pos + 10], key, chunk);
                        fill(&mut buf[pos + 10..pos + chunk], self.seq);
                    } else {
                        fill(&mut buf[pos..pos + chunk], self.seq);
                    }
                    stamp(&mut buf[end - STAMP_LEN..end], now_us);
                    self.sent(end);
                    emit(buf, end);
                    first = false;
                }
                if key {
                    self.keyframes_sent += 1;
                }
                self.picture_id = (self.picture_id + 1) & 0x7fff;
            }
        }
        self.frame_no += 1;
        self.next_due_us += self.frame_interval_us;
        if self.next_due_us + 1_000_000 < now_us {
            // Far behind (the process was starved): skip ahead instead of bursting to catch up.
            self.next_due_us = now_us + self.frame_interval_us;
        }
    }

    fn sent(&mut self, len: usize) {
        self.seq = self.seq.wrapping_add(1);
        self.packets_sent += 1;
        self.bytes_sent += len as u64;
    }

    /// RTP header (with the MID extension when set); returns its length.
    fn write_header(&self, buf: &mut [u8], ts: u32, marker: bool) -> usize {
        buf[0] = 0x80 | if self.mid_ext.is_some() { 0x10 } else { 0 };
        buf[1] = (u8::from(marker) << 7) | (self.payload_type & 0x7f);
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let Some((id, mid)) = &self.mid_ext else {
            return 12;
        };
        let body = 1 + mid.len();
        let words = body.div_ceil(4);
        buf[12..14].copy_from_slice(&[0xBE, 0xDE]);
        buf[14..16].copy_from_slice(&(words as u16).to_be_bytes());
        buf[16] = (id << 4) | (mid.len() as u8 - 1);
        buf[17..17 + mid.len()].copy_from_slice(mid);
        for b in &mut buf[17 + mid.len()..16 + words * 4] {
            *b = 0;
        }
        16 + words * 4
    }
}

/// The 10 first bytes of a VP8 frame (RFC 6386 9.1): frame tag, and for keyframes the start code
/// and a 640x480 size. `P` (bit 0) is 0 on keyframes, which is what SFUs look at.
fn write_vp8_header(out: &mut [u8], key: bool, frame_len: usize) {
    let first_part = (frame_len as u32 / 2) & 0x7_ffff;
    let tag = u32::from(!key) | (1 << 4) | (first_part << 5); // version 0, show_frame
    out[0] = tag as u8;
    out[1] = (tag >> 8) as u8;
    out[2] = (tag >> 16) as u8;
    if key {
        out[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        out[6..8].copy_from_slice(&640u16.to_le_bytes());
        out[8..10].copy_from_slice(&480u16.to_le_bytes());
    } else {
        for b in &mut out[3..10] {
            *b = 0x55;
        }
    }
}

fn fill(out: &mut [u8], seed: u16) {
    let s = seed as u8;
    for (i, b) in out.iter_mut().enumerate() {
        *b = s.wrapping_add(i as u8);
    }
}

fn stamp(out: &mut [u8], now_us: u64) {
    out[..4].copy_from_slice(&STAMP_MAGIC);
    out[4..12].copy_from_slice(&now_us.to_be_bytes());
}

/// The send stamp at the end of a payload, if it carries one.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let n = payload.len();
    if n < STAMP_LEN || payload[n - STAMP_LEN..n - 8] != STAMP_MAGIC {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&payload[n - 8..]);
    Some(u64::from_be_bytes(b))
}

/// Payload of an RTP packet (after CSRCs, extension; before padding), if well formed.
pub fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &mut SendStream, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; PACKET_BUF];
        for i in 0..n {
            s.next_frame(i as u64 * 1000, &mut buf, &mut |b, len| {
                out.push(b[..len].to_vec())
            });
        }
        out
    }

    #[test]
    fn video_bitrate_matches_request_and_first_frame_is_key() {
        let mut s = SendStream::video(1, 96, 1000, 30, 2.0, 0, 7);
        let pkts = frames(&mut s, 300); // 10 s
        let payload: usize = pkts.iter().map(|p| rtp_payload(p).unwrap().len()).sum();
        let kbps = payload as f64 * 8.0 / 10.0 / 1000.0;
        assert!((800.0..1200.0).contains(&kbps), "{kbps} kbit/s");
        assert_eq!(s.keyframes_sent, 5);
        let first = rtp_payload(&pkts[0]).unwrap();
        assert_eq!(first[0] & 0x10, 0x10, "S bit on the first packet");
        assert_eq!(first[4] & 1, 0, "P bit 0 on a keyframe");
        assert_eq!(&first[7..10], &[0x9d, 0x01, 0x2a]);
    }

    #[test]
    fn a_following_stream_sends_what_the_remb_allows() {
        let mut s = SendStream::video(1, 96, 1000, 30, 2.0, 0, 7);
        s.on_remb(200_000);
        assert_eq!(s.target_kbps, 1000, "not following unless asked");
        s.follow_remb = true;
        s.on_remb(200_000);
        let pkts = frames(&mut s, 300);
        let payload: usize = pkts.iter().map(|p| rtp_payload(p).unwrap().len()).sum();
        let kbps = payload as f64 * 8.0 / 10.0 / 1000.0;
        assert!((160.0..240.0).contains(&kbps), "{kbps} kbit/s");
        s.on_remb(50_000_000);
        assert_eq!(s.target_kbps, 1000, "never above the configured rate");
        s.on_remb(1);
        assert_eq!(s.target_kbps, MIN_VIDEO_KBPS);
        let mut a = SendStream::audio(2, 111, 0, 1);
        a.follow_remb = true;
        a.on_remb(1000);
        assert_eq!(a.target_kbps, 0, "audio never follows");
    }

    #[test]
    fn sequence_numbers_are_consecutive_and_marker_ends_frames() {
        let mut s = SendStream::video(1, 96, 2000, 30, 3.0, 0, 1);
        let pkts = frames(&mut s, 10);
        for w in pkts.windows(2) {
            let a = u16::from_be_bytes([w[0][2], w[0][3]]);
            let b = u16::from_be_bytes([w[1][2], w[1][3]]);
            assert_eq!(b, a.wrapping_add(1));
            let ts_changes = w[0][4..8] != w[1][4..8];
            assert_eq!(
                w[0][1] & 0x80 != 0,
                ts_changes,
                "marker exactly on the last packet of a frame"
            );
        }
        assert!(pkts.iter().all(|p| p.len() <= 1200 - 16));
    }

    #[test]
    fn stamp_round_trips_with_mid_extension() {
        let mut s = SendStream::audio(5, 111, 0, 3);
        s.mid_ext = Some((4, b"0".to_vec()));
        let mut buf = [0u8; PACKET_BUF];
        let mut got = None;
        s.next_frame(123_456, &mut buf, &mut |b, len| {
            got = Some(b[..len].to_vec())
        });
        let p = got.unwrap();
        assert_eq!(&p[12..14], &[0xBE, 0xDE]);
        assert_eq!(read_stamp(rtp_payload(&p).unwrap()), Some(123_456));
        assert_eq!(s.next_due_us, 20_000);
    }

    #[test]
    fn malformed_payloads_have_no_stamp() {
        assert_eq!(read_stamp(b"short"), None);
        assert_eq!(
            rtp_payload(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE]),
            None
        );
        assert_eq!(
            rtp_payload(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200]),
            None
        );
    }
}
