//! The receiving side of a simulated subscriber that behaves like a browser toward the server's
//! congestion control: packets pass an optional impaired link ([`crate::impair::Link`]) and are
//! counted only once they are out of it; transport-cc feedback reports what came out, when (so
//! the server's estimator sees the queue and the losses); and what the subscriber observes of the
//! server's adaptation is kept: video paused (no video media for [`PAUSE_GAP_US`] while audio or
//! probe padding goes on) and resumed, and changes of the video SSRC. Sans-IO: the pump feeds it packets and the
//! time, and sends the feedback it produces.

use std::collections::VecDeque;

use mediasrv_core::rtp::RtpView;
use mediasrv_core::twcc::TwccRecorder;

use crate::impair::{ImpairConfig, Link, LinkCounters};
use crate::synth::read_stamp;

/// Transport-cc feedback interval (Chromium sends about every 50–100 ms).
pub const FEEDBACK_INTERVAL_US: u64 = 50_000;
/// No video media for this long while audio still arrives counts as paused video.
pub const PAUSE_GAP_US: u64 = 1_000_000;
/// Packets held inside the impaired link at most (the queue bound keeps it far below this).
const MAX_HELD: usize = 8192;

#[derive(Debug, Clone, Default)]
pub struct ReceiverConfig {
    /// Payload types of video on this connection (the rest is audio).
    pub video_payload_types: Vec<u8>,
    /// The transport-cc header extension id, when negotiated: feedback is sent.
    pub transport_cc_ext: Option<u8>,
    pub impair: Option<ImpairConfig>,
}

/// What the pump needs of one received RTP packet once it is out of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub ssrc: u32,
    pub seq: u16,
    pub len: usize,
    pub sent_us: Option<u64>,
    pub twcc_seq: Option<u16>,
    pub video: bool,
    pub padding_only: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiverStats {
    /// Delivered (out of the link): all RTP, and video media only.
    pub packets: u64,
    pub bytes: u64,
    pub video_bytes: u64,
    pub padding_packets: u64,
    pub feedback_packets: u64,
    pub pauses: u64,
    pub resumes: u64,
    pub paused: bool,
    pub video_ssrc_changes: u64,
    /// SSRC of the video last received (the server's for this subscription).
    pub video_ssrc: Option<u32>,
    /// Time from the first packet out of the link to the first pause seen.
    pub first_pause_after_us: Option<u64>,
    /// Time from the last pause seen to the resume that ended it.
    pub last_resume_after_us: Option<u64>,
    pub link: LinkCounters,
}

#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    link: Option<Link>,
    /// (time out of the link, packet), in release order (the link is FIFO).
    held: VecDeque<(u64, Arrival)>,
    twcc: Option<TwccRecorder>,
    pub stats: ReceiverStats,
    last_video_media_us: Option<u64>,
    first_packet_us: Option<u64>,
    paused_at_us: u64,
    held_dropped: u64,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig, seed: u64, sender_ssrc: u32) -> Self {
        let link = cfg.impair.map(|c| Link::new(c, seed));
        let twcc = cfg
            .transport_cc_ext
            .map(|_| TwccRecorder::new(sender_ssrc, 0, FEEDBACK_INTERVAL_US));
        Self {
            cfg,
            link,
            held: VecDeque::new(),
            twcc,
            stats: ReceiverStats::default(),
            last_video_media_us: None,
            first_packet_us: None,
            paused_at_us: 0,
            held_dropped: 0,
        }
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// Reads what matters of a decrypted RTP packet; None if it does not parse.
    pub fn classify(&self, rtp: &[u8]) -> Option<Arrival> {
        let v = RtpView::parse(rtp).ok()?;
        let twcc_seq = self
            .cfg
            .transport_cc_ext
            .and_then(|id| v.extension(id))
            .filter(|d| d.len() >= 2)
            .map(|d| u16::from_be_bytes([d[0], d[1]]));
        Some(Arrival {
            ssrc: v.ssrc,
            seq: v.seq,
            len: rtp.len(),
            sent_us: read_stamp(v.payload()),
            twcc_seq,
            video: self.cfg.video_payload_types.contains(&v.payload_type),
            padding_only: v.payload().is_empty(),
        })
    }

    /// A packet reached the socket at `arrival_us` as a datagram of `wire_len` bytes. Lost in the
    /// link, it is gone (its transport-wide number is then reported missing); otherwise it comes
    /// out at the time [`Receiver::take_due`] hands it over.
    pub fn on_arrival(&mut self, a: Arrival, arrival_us: u64, wire_len: usize) {
        let release = match &mut self.link {
            Some(link) => match link.offer(arrival_us, wire_len) {
                Some(t) => t,
                None => return,
            },
            None => arrival_us,
        };
        if self.held.len() >= MAX_HELD {
            self.held_dropped += 1;
            return;
        }
        self.held.push_back((release, a));
    }

    /// Packets out of the link by `now_us`, each handed to `deliver(time out, packet)` in order;
    /// recorded for transport-cc and for what the subscriber observes.
    pub fn take_due(&mut self, now_us: u64, deliver: &mut dyn FnMut(u64, &Arrival)) {
        while self.held.front().is_some_and(|(t, _)| *t <= now_us) {
            let Some((t, a)) = self.held.pop_front() else {
                break;
            };
            self.observe(t, &a);
            deliver(t, &a);
        }
    }

    fn observe(&mut self, t: u64, a: &Arrival) {
        if let (Some(rec), Some(seq)) = (&mut self.twcc, a.twcc_seq) {
            rec.record(seq, t);
        }
        let first = *self.first_packet_us.get_or_insert(t);
        let s = &mut self.stats;
        s.packets += 1;
        s.bytes += a.len as u64;
        if a.padding_only {
            s.padding_packets += 1;
        }
        if a.video && !a.padding_only {
            s.video_bytes += a.len as u64;
            if s.paused {
                s.paused = false;
                s.resumes += 1;
                s.last_resume_after_us = Some(t.saturating_sub(self.paused_at_us));
            }
            if s.video_ssrc.is_some_and(|v| v != a.ssrc) {
                s.video_ssrc_changes += 1;
            }
            s.video_ssrc = Some(a.ssrc);
            self.last_video_media_us = Some(t);
        } else if let Some(last) = self.last_video_media_us {
            // Audio or padding (the server also probes with padding while video flows) goes on,
            // video media does not: paused.
            if !s.paused && t.saturating_sub(last) > PAUSE_GAP_US {
                // Paused since the last video media.
                s.paused = true;
                s.pauses += 1;
                self.paused_at_us = last;
                s.first_pause_after_us
                    .get_or_insert(last.saturating_sub(first));
            }
        }
    }

    /// Transport-cc feedback due at `now_us`, appended to `out` (one or more RTCP packets).
    pub fn poll_feedback(&mut self, now_us: u64, out: &mut Vec<u8>) -> usize {
        let n = self
            .twcc
            .as_mut()
            .map_or(0, |r| r.poll_feedback(now_us, out));
        self.stats.feedback_packets += n as u64;
        n
    }

    /// Counters, with the link's.
    pub fn snapshot(&self) -> ReceiverStats {
        let mut s = self.stats;
        if let Some(l) = &self.link {
            s.link = l.counters;
        }
        s.link.dropped_queue += self.held_dropped;
        s
    }
}

/// The RTCP packets of a compound datagram, by their length fields (for sending them apart).
pub fn split_rtcp(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let head = buf.get(pos..pos + 4)?;
        let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
        let p = buf.get(pos..pos + len)?;
        pos += len;
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mediasrv_core::twcc::TwccFeedback;

    const VIDEO_PT: u8 = 96;
    const AUDIO_PT: u8 = 111;
    const EXT: u8 = 5;

    /// RTP with the transport-cc extension, `payload` bytes of payload (0: padding only).
    fn rtp(pt: u8, seq: u16, twcc: u16, payload: usize) -> Vec<u8> {
        let mut p = vec![
            0x90,
            pt,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            42,
        ];
        p.extend([
            0xBE,
            0xDE,
            0,
            1,
            EXT << 4 | 1,
            (twcc >> 8) as u8,
            twcc as u8,
            0,
        ]);
        if payload == 0 {
            p[0] |= 0x20;
            p.extend([0u8; 199]);
            p.push(200);
        } else {
            p.extend(vec![7u8; payload]);
        }
        p
    }

    fn receiver(impair: Option<ImpairConfig>) -> Receiver {
        Receiver::new(
            ReceiverConfig {
                video_payload_types: vec![VIDEO_PT],
                transport_cc_ext: Some(EXT),
                impair,
            },
            3,
            0x1234,
        )
    }

    fn feed(r: &mut Receiver, p: &[u8], t: u64) -> Vec<(u64, Arrival)> {
        let a = r.classify(p).unwrap();
        r.on_arrival(a, t, p.len() + 16);
        let mut got = Vec::new();
        r.take_due(t, &mut |t, a| got.push((t, *a)));
        got
    }

    #[test]
    fn reads_the_transport_wide_number_and_padding() {
        let r = receiver(None);
        let a = r.classify(&rtp(VIDEO_PT, 10, 777, 0)).unwrap();
        assert_eq!(
            (a.twcc_seq, a.video, a.padding_only),
            (Some(777), true, true)
        );
        let a = r.classify(&rtp(AUDIO_PT, 11, 778, 100)).unwrap();
        assert_eq!(
            (a.twcc_seq, a.video, a.padding_only),
            (Some(778), false, false)
        );
    }

    #[test]
    fn feedback_reports_what_came_out_of_the_link_and_when() {
        // 200 kbit/s, 100 ms queue: a burst of 20 packets of ~1.2 kB is mostly lost at the tail.
        let mut r = receiver(Some(ImpairConfig {
            rate_bps: 200_000,
            queue_us: 100_000,
            loss: 0.0,
        }));
        for i in 0..20u16 {
            assert!(feed(&mut r, &rtp(VIDEO_PT, i, i, 1150), 1_000).is_empty());
        }
        let mut out = Vec::new();
        let mut delivered = Vec::new();
        r.take_due(1_000_000, &mut |t, a| {
            delivered.push((t, a.twcc_seq.unwrap()))
        });
        assert!(
            !delivered.is_empty() && delivered.len() < 5,
            "{delivered:?}"
        );
        assert!(
            delivered.windows(2).all(|w| w[1].0 > w[0].0),
            "spaced by the link"
        );
        // A later packet closes the report: the tail-dropped ones are reported lost.
        feed(&mut r, &rtp(VIDEO_PT, 20, 20, 100), 2_000_000);
        r.take_due(2_100_000, &mut |_, _| {});
        assert!(r.poll_feedback(2_100_000, &mut out) >= 1);
        let (fb, _) = TwccFeedback::parse(&out).unwrap();
        let received: Vec<u16> = fb
            .packets
            .iter()
            .filter(|p| p.arrival_us.is_some())
            .map(|p| p.seq)
            .collect();
        let mut expected: Vec<u16> = delivered.iter().map(|d| d.1).collect();
        expected.push(20);
        assert_eq!(received, expected);
        assert!(fb.packets.iter().any(|p| p.arrival_us.is_none()));
        assert_eq!(r.snapshot().link.delivered, expected.len() as u64);
        assert!(r.snapshot().link.dropped_queue > 0);
    }

    #[test]
    fn pause_and_resume_as_the_subscriber_sees_them() {
        let mut r = receiver(None);
        feed(&mut r, &rtp(VIDEO_PT, 1, 1, 500), 0);
        feed(&mut r, &rtp(AUDIO_PT, 1, 2, 80), 500_000);
        feed(&mut r, &rtp(VIDEO_PT, 2, 3, 0), 600_000); // probe padding while video flows
        assert!(
            !r.stats.paused,
            "a short gap is not a pause, padding is not"
        );
        feed(&mut r, &rtp(VIDEO_PT, 3, 4, 0), PAUSE_GAP_US + 1);
        assert!(r.stats.paused, "padding only for longer than the gap");
        feed(&mut r, &rtp(VIDEO_PT, 4, 5, 500), 3_000_000);
        assert_eq!(
            (r.stats.pauses, r.stats.resumes, r.stats.paused),
            (1, 1, false)
        );
        // Audio alone for longer than the gap: paused without any padding.
        feed(
            &mut r,
            &rtp(AUDIO_PT, 2, 6, 80),
            3_000_000 + PAUSE_GAP_US + 1,
        );
        assert_eq!((r.stats.pauses, r.stats.paused), (2, true));
        assert_eq!(r.stats.padding_packets, 2);
    }

    #[test]
    fn compound_feedback_splits_into_packets() {
        let a = [0x8f, 205, 0, 1, 0, 0, 0, 1];
        let b = [0x8f, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let both = [&a[..], &b[..], &[0x80]].concat();
        let parts: Vec<&[u8]> = split_rtcp(&both).collect();
        assert_eq!(parts, vec![&a[..], &b[..]]);
    }
}
