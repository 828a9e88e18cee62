//! One subscriber transport's downlink: the transport-wide sequence numbers stamped on everything
//! sent to it, its bandwidth estimate (`SendSideBwe`: transport-cc feedback, else REMB bounded by the
//! loss its receiver reports), and the allocation of that estimate: audio first, always; video gets
//! what is left. When the share of one video stream falls below `video_pause_bps` the transport's
//! video is paused (audio keeps flowing); it resumes once the share has stayed above
//! `video_resume_bps` for `video_resume_hold_ms` (doubled, up to 8x, for each pause that comes
//! within 10 s of a resume, unless the share is twice the threshold), starting again at a
//! keyframe. While paused, padding probes on a paused video stream let the estimator see
//! recovered capacity. While video flows, probes go as padding on a video subscription's RTX
//! stream (numbered on their own, so the media's sequence numbers and the NACK mapping are
//! untouched): the estimator finds room above what is sent now, which a higher simulcast layer or
//! a publisher's higher rate then uses.

use super::*;
use crate::bwe::{BweConfig, SendSideBwe};

/// The estimator's ceiling: a subscriber link may carry many publishers' video.
const ESTIMATE_MAX_BPS: u64 = 50_000_000;
/// A pause this soon after a resume means the resume did not fit: the next resume waits twice as
/// long (up to `RESUME_BACKOFF_MAX` times the configured hold). A link whose estimate swings across
/// the thresholds with every probe otherwise pauses and resumes every few seconds, and each resume
/// puts a keyframe into a link that is already full, ahead of the audio.
const FLAP_WINDOW_MS: u64 = 10_000;
const RESUME_BACKOFF_MAX: u64 = 8;
/// Least the estimator may report (it never pauses audio; this only bounds its arithmetic).
const ESTIMATE_FLOOR_BPS: u64 = 30_000;
/// Largest padding packet a probe sends (RTP padding counts at most 255 bytes).
pub const PROBE_PADDING_BYTES: usize = 255;
/// Most padding one downlink is sent per `probe` call, whatever the estimator asks.
const MAX_PROBE_BYTES_PER_CALL: usize = 32 * 1024;

/// What the network carries per RTP packet beyond its bytes: the SRTP tag (16 for AES-GCM, 10 for
/// AES-CM with HMAC-SHA1-80; the larger is counted) and IPv4 + UDP headers. The estimator counts
/// these too, so its estimate is a rate of the link, as a bottleneck measures it, not of RTP
/// bytes (at 150 packets a second the difference is ~50 kbit/s, a sixth of a 300 kbit/s link).
pub(super) const PACKET_OVERHEAD_BYTES: usize = 16 + 28;

/// Pacing engages when what a transport is sent reaches this share of its estimate, and lets go
/// below `PACE_OFF` (hysteresis) once its queue is empty.
const PACE_ON: f64 = 0.75;
const PACE_OFF: f64 = 0.5;
/// The pacing rate: nine tenths of the estimate, audio first (it is never held but spends the
/// rate), so that a burst (a keyframe, a resend) waits in our queue rather than in the
/// bottleneck's ahead of the audio; up to a quarter above what the transport is sent on average
/// when that needs the room, but on a link that stepped down lately never beyond the estimate
/// (the pacer smooths bursts; fitting the average to the estimate is the allocation's work:
/// layers, pausing, the publisher's REMB). Paced at 1.1x the estimate (before), a 300 kbit/s link
/// whose estimate sat at or above its rate kept queueing.
const PACE_OF_ESTIMATE_PERCENT: u64 = 90;
const PACE_OVER_SENT_PERCENT: u64 = 125;
/// After a step down (the estimate below `DRAIN_DROP_PERCENT` of its highest in the last
/// `DRAIN_WINDOW_MS`, and below what the transport is being sent), the pacer sends at half the
/// estimate for `DRAIN_MS`: the bottleneck's queue, filled before any feedback could say so, then
/// empties in a fraction of a second instead of staying full for two while the media steps down
/// (each 500 ms of a high audio delay weighs on a receiver's jitter buffer for tens of seconds).
const DRAIN_PERCENT: u64 = 50;
const DRAIN_MS: u64 = 1_000;
const DRAIN_DROP_PERCENT: u64 = 66;
const DRAIN_WINDOW_MS: u64 = 1_000;

/// For this long after a step down the estimate is taken as the link's rate: the pacer does not go
/// beyond it. Otherwise (a connection's start, where the estimate trails the media while it ramps
/// up) the average's room may exceed it.
const LIMITED_MS: u64 = 60_000;

/// Rate a pacer releases at (bits per second), from the estimate and what the transport is sent.
fn pace_rate_bps(estimate_bps: u64, sent_bps: u64, draining: bool, limited: bool) -> u64 {
    let room = sent_bps * PACE_OVER_SENT_PERCENT / 100;
    let rate = if draining {
        estimate_bps * DRAIN_PERCENT / 100
    } else if limited {
        (estimate_bps * PACE_OF_ESTIMATE_PERCENT / 100).max(room.min(estimate_bps))
    } else {
        (estimate_bps * PACE_OF_ESTIMATE_PERCENT / 100).max(room)
    };
    rate.max(PACE_MIN_BPS)
}
/// Least pacing rate (an estimate's arithmetic floor must not starve the video).
const PACE_MIN_BPS: u64 = 100_000;
/// Most a pacing queue holds, in time at its rate: older video is dropped beyond it (the viewer
/// asks for a keyframe), rather than delaying everything behind it.
const PACE_MAX_QUEUE_MS: u64 = 500;
/// How much unused rate a pacer may save up (one poll's worth and some).
const PACE_BURST_MS: u64 = 40;

/// Holds a transport's video while it is sent close to its estimate; releases it at the pacing
/// rate. Audio is never held (it only spends the rate). Transport-wide sequence numbers are
/// stamped at release, so they follow the order and times packets really leave in.
#[derive(Default)]
pub(super) struct Pacer {
    active: bool,
    rate_bps: u64,
    tokens: i64,
    last_ms: u64,
    queue: std::collections::VecDeque<Paced>,
    queued_bytes: usize,
    /// Buffers of packets already released, for the next ones held (no allocation per packet).
    spare: Vec<Vec<u8>>,
    /// Highest estimate of the current window (and when the window began), and until when the
    /// pacer drains after a step down.
    high: (u64, u64),
    drain_until_ms: u64,
    limited_until_ms: u64,
    pub paced: u64,
    pub dropped: u64,
}

/// A held packet's buffer as first allocated (an MTU-sized RTP packet), and how many released
/// buffers a pacer keeps for reuse.
const PACED_BUFFER_BYTES: usize = 1_500;
const SPARE_BUFFERS: usize = 16;

struct Paced {
    buf: Vec<u8>,
    /// Where the transport-wide sequence number goes in `buf`, if the packet carries one.
    twcc_at: Option<usize>,
}

impl Pacer {
    pub fn active(&self) -> bool {
        self.active
    }

    /// Turns pacing on or off from what the transport was sent (`sent_bps`) against its estimate,
    /// and sets its rate (draining for a while after a step down of the estimate).
    fn update(&mut self, estimate_bps: Option<u64>, sent_bps: u64, now_ms: u64) {
        let Some(e) = estimate_bps.filter(|e| *e > 0) else {
            // (Not while it holds packets: what follows would overtake them.)
            if self.queue.is_empty() {
                self.active = false;
            }
            return;
        };
        let load = sent_bps as f64 / e as f64;
        if !self.active && load >= PACE_ON {
            self.active = true;
        } else if self.active && load < PACE_OFF && self.queue.is_empty() {
            self.active = false;
        }
        let (high, since) = self.high;
        if e >= high || now_ms >= since.saturating_add(DRAIN_WINDOW_MS) {
            // (A new window starts at the estimate now: a step is measured within one window.)
            self.high = (e, now_ms);
        } else if e < high / 100 * DRAIN_DROP_PERCENT && sent_bps > e {
            // (Only when more was being sent than the link now takes: else nothing queued.)
            self.drain_until_ms = now_ms + DRAIN_MS;
            self.limited_until_ms = now_ms + LIMITED_MS;
            self.high = (e, now_ms);
        }
        let draining = now_ms < self.drain_until_ms;
        if draining {
            self.active = true;
        }
        self.rate_bps = pace_rate_bps(e, sent_bps, draining, now_ms < self.limited_until_ms);
    }

    pub fn draining(&self, now_ms: u64) -> bool {
        now_ms < self.drain_until_ms
    }

    /// An empty buffer to write a packet to be held into (one a released packet left, if any).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PACED_BUFFER_BYTES))
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= 2 * PACED_BUFFER_BYTES {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Queues one packet (written with a placeholder transport-wide number at `twcc_at`).
    pub fn push(&mut self, buf: Vec<u8>, twcc_at: Option<usize>) {
        let cap = ((self.rate_bps * PACE_MAX_QUEUE_MS / 8000) as usize).max(16 * 1024);
        while self.queued_bytes + buf.len() > cap {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= old.buf.len();
            self.dropped += 1;
            self.recycle(old.buf);
        }
        self.queued_bytes += buf.len();
        self.paced += 1;
        self.queue.push_back(Paced { buf, twcc_at });
    }

    /// Audio (or anything not held) went out past the pacer: it used the rate too.
    pub fn spent(&mut self, bytes: usize) {
        if self.active {
            self.tokens -= (bytes + PACKET_OVERHEAD_BYTES) as i64;
        }
    }

    pub fn backlog(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// A subscriber's RTX stream (RFC 4588) as far as probes use it: padding-only packets on its SSRC.
#[derive(Debug, Clone, Copy)]
pub(super) struct RtxStream {
    ssrc: u32,
    pt: u8,
    next_seq: u16,
}

impl RtxStream {
    pub fn new(ssrc: u32, pt: u8, next_seq: u16) -> Self {
        Self { ssrc, pt, next_seq }
    }
}

/// What a poll decided for one downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VideoChange {
    None,
    Paused,
    Resumed,
}

pub(super) struct Downlink {
    /// Negotiated transport-cc extension id (0: not negotiated, nothing stamped).
    pub twcc_id: u8,
    next_twcc: u16,
    pub bwe: SendSideBwe,
    /// Whether the subscriber has told us anything about its link (REMB, transport-cc feedback, a
    /// lossy receiver report): until then its estimate constrains nobody and pauses nothing.
    pub informed: bool,
    pub video_paused: bool,
    /// Since when the video share has been above the resume threshold (while paused).
    above_since_ms: Option<u64>,
    /// When video last resumed, and the resume hold's multiplier (see `RESUME_BACKOFF_MAX`).
    resumed_ms: Option<u64>,
    resume_backoff: u64,
    /// Audio received and video streams received, from the last allocation.
    pub audio_bps: u64,
    pub video_streams: u64,
    pub pauses: u64,
    pub padding_packets: u64,
    pub padding_bytes: u64,
    /// Video share when the REMB to publishers last followed it (a marked drop is passed on).
    last_share: Option<u64>,
    /// Video received, from the last allocation (with `audio_bps`: what pacing compares).
    pub video_bps: u64,
    pub pacer: Pacer,
    /// RED audio goes to this transport's RED subscriptions as its primary alone (see
    /// `update_red_lean`).
    pub red_lean: bool,
}

/// RED's redundancy (about as much again as the audio) goes to a transport only while its video
/// has room for it: below the resume threshold and this much more per video stream it is dropped
/// (the primary alone, as plain Opus, is sent), and sent again once the share would stay twice
/// this above the threshold with it. On a tight link RED's ~30 kbit/s decide whether paused video
/// can resume; on a link with room it costs nothing the video needs and saves audio from loss.
const RED_ROOM_BPS: u64 = 40_000;

impl Downlink {
    pub fn new(cfg: &RouterConfig, twcc_id: u8) -> Self {
        // With transport-cc the estimator starts low and probes up; without it the subscriber's
        // REMB is the estimate from the start (bounded once its receiver reports say loss).
        let start = if twcc_id != 0 {
            cfg.bwe_start_bps
        } else {
            ESTIMATE_MAX_BPS
        };
        Self {
            twcc_id,
            next_twcc: 1,
            bwe: SendSideBwe::new(BweConfig {
                min_bps: ESTIMATE_FLOOR_BPS,
                start_bps: start.min(ESTIMATE_MAX_BPS),
                max_bps: ESTIMATE_MAX_BPS,
            }),
            informed: false,
            video_paused: false,
            above_since_ms: None,
            resumed_ms: None,
            resume_backoff: 1,
            audio_bps: 0,
            video_streams: 0,
            pauses: 0,
            padding_packets: 0,
            padding_bytes: 0,
            last_share: None,
            video_bps: 0,
            pacer: Pacer::default(),
            red_lean: false,
        }
    }

    /// Releases what the pacer holds that its rate allows by `now_ms` (all of it once pacing
    /// has let go), stamping transport-wide numbers as the packets leave.
    pub fn release(&mut self, transport: TransportId, now_ms: u64, out: &mut Output) {
        let elapsed = now_ms.saturating_sub(self.pacer.last_ms);
        self.pacer.last_ms = now_ms;
        if self.pacer.queue.is_empty() {
            self.pacer.tokens = self.pacer.tokens.max(0);
            return;
        }
        let burst = (self.pacer.rate_bps * PACE_BURST_MS / 8000) as i64;
        self.pacer.tokens = (self.pacer.tokens + (self.pacer.rate_bps * elapsed / 8000) as i64)
            .min(burst.max(1500));
        while !self.pacer.queue.is_empty() && (!self.pacer.active || self.pacer.tokens > 0) {
            let Some(mut p) = self.pacer.queue.pop_front() else {
                break;
            };
            self.pacer.queued_bytes -= p.buf.len();
            self.pacer.tokens -= (p.buf.len() + PACKET_OVERHEAD_BYTES) as i64;
            let twcc = match p.twcc_at {
                Some(at) => self.next_seq().inspect(|s| {
                    p.buf[at..at + 2].copy_from_slice(&s.to_be_bytes());
                }),
                None => None,
            };
            out.push_with(transport, |b| b.extend_from_slice(&p.buf));
            if let Some(s) = twcc {
                self.bwe.on_packet_sent(
                    s,
                    p.buf.len() + PACKET_OVERHEAD_BYTES,
                    now_ms * 1000,
                    false,
                );
            }
            self.pacer.recycle(p.buf);
        }
    }

    /// The transport-wide sequence number for the next packet, if transport-cc is negotiated.
    pub fn next_seq(&mut self) -> Option<u16> {
        if self.twcc_id == 0 {
            return None;
        }
        let s = self.next_twcc;
        self.next_twcc = s.wrapping_add(1);
        Some(s)
    }

    /// Estimate once the subscriber has reported on its link.
    pub fn estimate(&self) -> Option<u64> {
        self.informed.then(|| self.bwe.estimate_bps())
    }

    /// What one video stream may use: the estimate minus the audio, split over the video streams.
    pub fn video_share(&self) -> Option<u64> {
        let e = self.estimate()?;
        Some(e.saturating_sub(self.audio_bps) / self.video_streams.max(1))
    }

    /// Whether RED audio goes out with its redundancy (`RED_ROOM_BPS`). `audio_bps` is what was
    /// sent: with RED, or without it while lean (RED's cost is then taken to be as much again).
    /// Transports without video, or whose link is unknown yet, get RED as negotiated.
    pub fn update_red_lean(&mut self, cfg: &RouterConfig) {
        let Some(e) = self.estimate().filter(|_| self.video_streams > 0) else {
            self.red_lean = false;
            return;
        };
        let streams = self.video_streams;
        if !self.red_lean {
            let share = e.saturating_sub(self.audio_bps) / streams;
            self.red_lean = share < cfg.video_resume_bps + RED_ROOM_BPS;
        } else {
            let with_red = e.saturating_sub(2 * self.audio_bps) / streams;
            self.red_lean = with_red < cfg.video_resume_bps + 2 * RED_ROOM_BPS;
        }
    }

    /// How long the share must stay above the resume threshold before video resumes: the
    /// configured hold, doubled for each pause that came soon after a resume, unless the share is
    /// now well clear of the threshold (twice it: the link has come back, not a probe's swing).
    pub fn resume_hold_ms(&self, cfg: &RouterConfig, share: u64) -> u64 {
        if share >= cfg.video_resume_bps.saturating_mul(2) {
            return cfg.video_resume_hold_ms;
        }
        cfg.video_resume_hold_ms.saturating_mul(self.resume_backoff)
    }

    /// Pause or resume decision from the current estimate (hysteresis: pause at once below
    /// `video_pause_bps`, resume after `video_resume_hold_ms` above `video_resume_bps`).
    pub fn allocate(&mut self, cfg: &RouterConfig, now_ms: u64) -> VideoChange {
        let Some(share) = self.video_share().filter(|_| self.video_streams > 0) else {
            self.above_since_ms = None;
            return VideoChange::None;
        };
        if !self.video_paused {
            if share < cfg.video_pause_bps {
                self.video_paused = true;
                self.above_since_ms = None;
                self.pauses += 1;
                let flapped = self
                    .resumed_ms
                    .is_some_and(|t| now_ms < t.saturating_add(FLAP_WINDOW_MS));
                self.resume_backoff = if flapped {
                    (self.resume_backoff * 2).min(RESUME_BACKOFF_MAX)
                } else {
                    1
                };
                return VideoChange::Paused;
            }
            return VideoChange::None;
        }
        if share < cfg.video_resume_bps {
            self.above_since_ms = None;
            return VideoChange::None;
        }
        let since = *self.above_since_ms.get_or_insert(now_ms);
        if now_ms >= since.saturating_add(self.resume_hold_ms(cfg, share)) {
            self.video_paused = false;
            self.above_since_ms = None;
            self.resumed_ms = Some(now_ms);
            return VideoChange::Resumed;
        }
        VideoChange::None
    }
}

/// Each downlink's audio and video as its subscriptions received them at their last rate sample.
fn count_received(
    tracks: &FastMap<TrackId, Track>,
    downlinks: &mut FastMap<TransportId, Downlink>,
) {
    for d in downlinks.values_mut() {
        d.audio_bps = 0;
        d.video_streams = 0;
        d.video_bps = 0;
    }
    for t in tracks.values() {
        for s in t.subs.iter().filter(|s| s.sink.is_none()) {
            if let Some(d) = downlinks.get_mut(&s.transport) {
                match t.kind {
                    MediaKind::Audio => d.audio_bps += s.stats.bitrate_bps,
                    MediaKind::Video => {
                        d.video_streams += 1;
                        d.video_bps += s.stats.bitrate_bps;
                    }
                }
            }
        }
    }
}

/// Appends a padding-only RTP packet of `bytes` padding (1..=255) with the given header fields.
pub(super) fn write_padding(buf: &mut Vec<u8>, h: &HeaderOut<'_>, bytes: usize) {
    let bytes = bytes.clamp(1, PROBE_PADDING_BYTES);
    let start = buf.len();
    rtp::write_packet(buf, h, &[]);
    buf[start] |= 0x20;
    buf.resize(buf.len() + bytes - 1, 0);
    buf.push(bytes as u8);
}

impl Router {
    /// Counts each downlink's audio and video, runs its estimator's timers and applies its pause
    /// or resume to the video subscriptions of that transport (a resumed one waits for a keyframe,
    /// which `poll` asks the publisher for). A marked drop of a downlink's video share makes the
    /// REMB to the publishers it watches go out at this poll.
    pub(super) fn allocate(&mut self, now_ms: u64) {
        let Router {
            cfg,
            stats,
            tracks,
            downlinks,
            events,
            publishers,
            allocation_stale,
            ..
        } = self;
        if downlinks.is_empty() {
            return;
        }
        // Counted again only when something changed: walking every subscription at every poll
        // reads memory that is otherwise cold between packets.
        if std::mem::take(allocation_stale) {
            count_received(tracks, downlinks);
        }
        // (transport, Some(paused) when its video was paused or resumed, share dropped)
        let mut changed: Vec<(TransportId, Option<bool>, bool)> = Vec::new();
        for (id, d) in downlinks.iter_mut() {
            // What the connection would take if its link allowed: probing beyond it finds nothing
            // we would use (and floods a fast link with padding).
            let demand = d.audio_bps + d.video_streams * cfg.max_bitrate_bps;
            d.bwe.set_demand_bps(Some(demand));
            d.bwe.poll(now_ms * 1000);
            if cfg.pacing && d.twcc_id != 0 {
                let estimate = d.estimate();
                d.pacer.update(estimate, d.audio_bps + d.video_bps, now_ms);
            }
            d.update_red_lean(cfg);
            let share = d.video_share();
            let dropped = match (d.last_share, share) {
                (Some(before), Some(now)) => now < before - before / 10,
                _ => false,
            };
            if dropped || share.is_some_and(|s| d.last_share.is_none_or(|b| s > b + b / 10)) {
                d.last_share = share;
            }
            let change = match d.allocate(cfg, now_ms) {
                VideoChange::None => None,
                VideoChange::Paused => Some(true),
                VideoChange::Resumed => Some(false),
            };
            if let Some(paused) = change {
                let estimate_bps = d.bwe.estimate_bps();
                let e = if paused {
                    stats.video_pauses += 1;
                    RouterEvent::VideoPaused {
                        transport: *id,
                        estimate_bps,
                    }
                } else {
                    stats.video_resumes += 1;
                    RouterEvent::VideoResumed {
                        transport: *id,
                        estimate_bps,
                    }
                };
                push_event(events, stats, e);
            }
            if change.is_some() || dropped {
                changed.push((*id, change, dropped));
            }
        }
        if changed.is_empty() {
            return;
        }
        for t in tracks.values_mut().filter(|t| t.kind == MediaKind::Video) {
            let mut keyframe = false;
            for s in t.subs.iter_mut() {
                let Some(&(_, change, dropped)) = changed.iter().find(|c| c.0 == s.transport)
                else {
                    continue;
                };
                if dropped {
                    if let Some(p) = publishers.get_mut(&t.transport) {
                        p.remb_due = true;
                    }
                }
                match change {
                    Some(true) => s.paused = true,
                    Some(false) => {
                        // Continues its sequence numbers and timestamps from the last packet sent
                        // (media or probe padding), at the next keyframe.
                        s.paused = false;
                        s.started = false;
                        s.stats.waiting_keyframe = s.gated;
                        keyframe |= s.gated;
                    }
                    None => {}
                }
                s.stats.paused = s.paused;
            }
            if keyframe {
                t.pli_pending = true;
            }
        }
    }

    /// Padding probes toward downlinks whose estimator wants to test a higher rate, each packet
    /// carrying a transport-wide sequence number. Paused video: padding-only RTP on a paused video
    /// stream, numbered on from its last packet (its sequence stays continuous when video
    /// resumes). Flowing video: padding-only RTX on a video subscription's RTX stream. Call with
    /// the periodic `poll`; `out` takes RTP.
    pub fn probe(&mut self, now_ms: u64, out: &mut Output) {
        let Router {
            tracks,
            downlinks,
            stats,
            ..
        } = self;
        let now_us = now_ms * 1000;
        for (id, d) in downlinks.iter_mut() {
            d.release(*id, now_ms, out);
            // A backlog means no room to probe for; nor is there while draining a step down.
            if d.twcc_id == 0
                || d.video_streams == 0
                || d.pacer.backlog()
                || d.pacer.draining(now_ms)
            {
                continue;
            }
            let paused = d.video_paused;
            let Some(s) = tracks
                .values_mut()
                .filter(|t| t.kind == MediaKind::Video)
                .flat_map(|t| t.subs.iter_mut())
                .find(|s| {
                    s.transport == *id
                        && s.last_out.is_some()
                        && if paused {
                            s.paused
                        } else {
                            s.started && !s.paused && s.rtx.is_some()
                        }
                })
            else {
                continue; // nothing to carry a probe (e.g. no RTX negotiated): none is started
            };
            let Some(req) = d.bwe.probe_wanted(now_us) else {
                continue;
            };
            // Timestamps move on with the time, as the media's would (video: 90 kHz).
            let (mut seq, last_ts, last_ms) = s.last_out.expect("checked above");
            let ts = last_ts.wrapping_add((now_ms.saturating_sub(last_ms) * 90) as u32);
            let (ssrc, pt) = match (paused, s.rtx) {
                (false, Some(rtx)) => {
                    seq = rtx.next_seq.wrapping_sub(1);
                    (rtx.ssrc, rtx.pt)
                }
                _ => match s.pt_map.iter().copied().find(|pt| *pt != 0xff) {
                    Some(pt) => (s.ssrc, pt),
                    None => continue,
                },
            };
            let mut left = req.bytes.min(MAX_PROBE_BYTES_PER_CALL);
            while left > 0 {
                let pad = left.min(PROBE_PADDING_BYTES);
                left -= pad;
                seq = seq.wrapping_add(1);
                let Some(twcc) = d.next_seq() else {
                    break;
                };
                let twcc_bytes = twcc.to_be_bytes();
                let exts = [(d.twcc_id, &twcc_bytes[..])];
                let h = HeaderOut {
                    marker: false,
                    payload_type: pt,
                    seq,
                    timestamp: if paused { ts } else { last_ts },
                    ssrc,
                    csrc_bytes: &[],
                    extensions: &exts,
                };
                let mut len = 0;
                out.push_with(*id, |b| {
                    let start = b.len();
                    write_padding(b, &h, pad);
                    len = b.len() - start;
                });
                d.bwe
                    .on_packet_sent(twcc, len + PACKET_OVERHEAD_BYTES, now_us, true);
                d.padding_packets += 1;
                d.padding_bytes += len as u64;
                stats.padding_out += 1;
                stats.rtp_packets_out += 1;
                stats.rtp_bytes_out += len as u64;
            }
            if paused {
                s.last_out = Some((seq, ts, now_ms));
                s.stats.last_seq = Some(seq);
            } else if let Some(rtx) = s.rtx.as_mut() {
                rtx.next_seq = seq.wrapping_add(1);
            }
        }
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::*;

    #[test]
    fn a_held_packets_buffer_is_used_again_for_the_next_one() {
        let mut d = Downlink::new(&RouterConfig::default(), 0);
        let mut buf = d.pacer.buffer();
        buf.extend_from_slice(&[0x80; 1200]);
        let first = buf.as_ptr();
        d.pacer.push(buf, None);
        let mut out = Output::new();
        d.release(TransportId(1), 10, &mut out);
        assert_eq!(out.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(), [1200]);
        let again = d.pacer.buffer();
        assert!(again.is_empty());
        assert_eq!(
            again.as_ptr(),
            first,
            "the released packet's buffer, not a new one"
        );
    }

    #[test]
    fn pacing_rate_stays_under_the_estimate_with_room_for_the_average() {
        // Nine tenths of the estimate when what is sent leaves room for bursts.
        assert_eq!(pace_rate_bps(340_000, 250_000, false, true), 312_500);
        assert_eq!(pace_rate_bps(340_000, 200_000, false, true), 306_000);
        assert_eq!(pace_rate_bps(3_000_000, 1_500_000, false, false), 2_700_000);
        // On a link limited lately, up to the estimate (never beyond) when the average needs it.
        assert_eq!(pace_rate_bps(340_000, 300_000, false, true), 340_000);
        assert_eq!(pace_rate_bps(340_000, 600_000, false, true), 340_000);
        // Otherwise (the estimate still ramping up) a quarter above the average.
        assert_eq!(pace_rate_bps(340_000, 600_000, false, false), 750_000);
        // Draining after a step down: half the estimate, whatever is sent.
        assert_eq!(pace_rate_bps(250_000, 1_500_000, true, true), 125_000);
        // Never below the floor.
        assert_eq!(pace_rate_bps(60_000, 10_000, true, true), PACE_MIN_BPS);
    }

    #[test]
    fn a_step_down_of_the_estimate_drains_for_a_second() {
        let mut p = Pacer::default();
        p.update(Some(3_000_000), 2_500_000, 0);
        assert!(!p.draining(0));
        assert_eq!(p.rate_bps, 3_125_000);
        // A fall to 70 % of the window's high is no step.
        p.update(Some(2_100_000), 2_500_000, 300);
        assert!(!p.draining(300));
        // Below 66 % of it within the window: drain for DRAIN_MS at half the estimate.
        p.update(Some(1_900_000), 2_500_000, 500);
        assert!(p.draining(500) && p.active());
        assert_eq!(p.rate_bps, 950_000);
        p.update(Some(1_900_000), 2_500_000, 1_499);
        assert!(p.draining(1_499));
        p.update(Some(1_900_000), 2_500_000, 1_500);
        assert!(!p.draining(1_500));
        // Limited since the step: the estimate bounds it for LIMITED_MS.
        assert_eq!(p.rate_bps, 1_900_000);
        p.update(Some(1_900_000), 2_500_000, 500 + LIMITED_MS);
        assert_eq!(p.rate_bps, 3_125_000);
        // A fall below what is sent only: nothing was queued (a probe's raise undone).
        let mut p = Pacer::default();
        p.update(Some(3_000_000), 800_000, 0);
        p.update(Some(1_000_000), 800_000, 100);
        assert!(!p.draining(100));
        // A slow decline across windows (each under a third) is no step either.
        let mut p = Pacer::default();
        for (i, e) in [1_000_000u64, 800_000, 640_000, 512_000]
            .into_iter()
            .enumerate()
        {
            p.update(Some(e), 100_000, i as u64 * 1_000);
            assert!(!p.draining(i as u64 * 1_000), "{e}");
        }
    }
}
