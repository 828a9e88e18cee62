//! RTCP side of the router: subscribers' feedback (NACK, PLI, FIR, REMB, reports), publishers'
//! sender reports, and the periodic work (REMB, keyframe requests).

use super::*;
use crate::rtcp::{self, ReportBlock, RtcpPacket};
use crate::seq::extend_u16;

/// Most retransmissions answered for one RTCP datagram; the rest are counted as `nack_limited`.
pub const MAX_RETRANSMISSIONS_PER_RTCP: usize = 256;
/// How often `poll` runs the track upkeep that works on a scale of seconds (bitrate samples every
/// `RATE_SAMPLE_MS`, silence, sender reports, keyframe retries).
pub const UPKEEP_MS: u64 = 125;
const _: () = assert!(RATE_SAMPLE_MS.is_multiple_of(UPKEEP_MS));
/// A receiver report's fraction lost (of 256) from which it says the link is in trouble (10 %).
const LOSSY_FRACTION: u8 = 26;
/// A resent packet's bytes beyond its payload, as the budget counts them: RTP header and
/// extensions, SRTP tag, UDP and IP.
const RTP_OVERHEAD_BYTES: usize = 60;

impl Router {
    // ------------------------------------------------------------------ RTCP

    /// Sends a PLI for `track` to its publisher unless one went out less than the throttle ago.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_pli(
        cfg: &RouterConfig,
        stats: &mut RouterStats,
        events: &mut Vec<RouterEvent>,
        publishers: &FastMap<TransportId, Publisher>,
        t: &mut Track,
        reason: KeyframeReason,
        now_ms: u64,
        out: &mut Output,
    ) -> bool {
        if t.kind != MediaKind::Video {
            return false;
        }
        let (Some(media_ssrc), Some(p)) = (t.feedback_ssrc(), publishers.get(&t.transport)) else {
            return false;
        };
        if t.last_pli_ms
            .is_some_and(|last| now_ms < last.saturating_add(cfg.pli_min_interval_ms))
        {
            stats.plis_throttled += 1;
            return false;
        }
        t.last_pli_ms = Some(now_ms);
        t.pli_pending = false;
        t.stats.plis_out += 1;
        stats.plis_out += 1;
        stats.keyframe_requests[reason as usize] += 1;
        push_event(
            events,
            stats,
            RouterEvent::KeyframeRequested {
                track: t.id,
                reason,
            },
        );
        stats.rtcp_packets_out += 1;
        out.push_with(t.transport, |b| rtcp::write_pli(b, p.rtcp_ssrc, media_ssrc));
        true
    }

    /// Asks the publisher of `track` for a keyframe (throttled); true if a PLI was written.
    pub fn request_keyframe(&mut self, track: TrackId, now_ms: u64, out: &mut Output) -> bool {
        let Router {
            cfg,
            stats,
            publishers,
            tracks,
            events,
            ..
        } = self;
        match tracks.get_mut(&track) {
            Some(t) => Self::send_pli(
                cfg,
                stats,
                events,
                publishers,
                t,
                KeyframeReason::Requested,
                now_ms,
                out,
            ),
            None => false,
        }
    }

    /// Handles one (compound) RTCP datagram from `transport`: subscribers' feedback produces
    /// retransmissions (`rtp_out`) and PLIs toward publishers (`rtcp_out`); publishers' sender
    /// reports are noted.
    pub fn handle_rtcp(
        &mut self,
        transport: TransportId,
        packet: &[u8],
        now_ms: u64,
        rtp_out: &mut Output,
        rtcp_out: &mut Output,
    ) {
        self.stats.rtcp_packets_in += 1;
        if packet.is_empty() {
            return self.stats.drop(DropReason::MalformedRtcp);
        }
        // Bounds what one datagram can make us send (a NACK can name thousands of packets).
        let mut budget = MAX_RETRANSMISSIONS_PER_RTCP;
        let mut twcc_feedback = false;
        for item in rtcp::parse_compound(packet) {
            let p = match item {
                Ok(p) => p,
                Err(_) => {
                    self.stats.drop(DropReason::MalformedRtcp);
                    break;
                }
            };
            match p {
                RtcpPacket::SenderReport {
                    ssrc,
                    ntp,
                    rtp_timestamp,
                    reports,
                    ..
                } => {
                    if let Some(t) = self
                        .track_by_ssrc
                        .get(&(transport, ssrc))
                        .and_then(|id| self.tracks.get_mut(id))
                    {
                        if let Some(l) = t.layered.as_deref_mut() {
                            l.on_sender_report(ssrc, ntp, rtp_timestamp, now_ms);
                        }
                        // (A layered track's is the report on its feedback SSRC: for the report
                        // blocks it gets back.)
                        if t.media_ssrc.is_none_or(|m| m == ssrc) {
                            t.stats.last_sr = Some((ntp, rtp_timestamp, now_ms));
                        }
                    }
                    self.note_reports(transport, reports, now_ms);
                }
                RtcpPacket::ReceiverReport { reports, .. } => {
                    self.note_reports(transport, reports, now_ms)
                }
                RtcpPacket::Nack {
                    media_ssrc, items, ..
                } => {
                    self.stats.nacks_in += 1;
                    self.answer_nack(transport, media_ssrc, items, &mut budget, now_ms, rtp_out);
                }
                RtcpPacket::Pli { media_ssrc, .. } => {
                    self.stats.plis_in += 1;
                    self.forward_keyframe_request(transport, media_ssrc, false, now_ms, rtcp_out);
                }
                RtcpPacket::Fir { items, .. } => {
                    self.stats.firs_in += 1;
                    for (ssrc, _) in items.iter() {
                        self.forward_keyframe_request(transport, ssrc, true, now_ms, rtcp_out);
                    }
                }
                RtcpPacket::Remb {
                    bitrate_bps, ssrcs, ..
                } => {
                    self.stats.remb_in += 1;
                    for ssrc in ssrcs.iter() {
                        self.note_remb(transport, ssrc, bitrate_bps);
                    }
                    if let Some(d) = self.downlinks.get_mut(&transport) {
                        d.bwe.on_remb(bitrate_bps, now_ms * 1000);
                        d.informed = true;
                    }
                }
                RtcpPacket::ExtendedReport { blocks, .. } => {
                    if let Some(p) = self.publishers.get_mut(&transport) {
                        let ours = p.rtcp_ssrc;
                        for item in blocks.dlrr().filter(|i| i.ssrc == ours) {
                            if let Some(rtt) =
                                rtt_from_echo(&p.rrtr_sent, item.last_rr, item.delay, now_ms)
                            {
                                p.rtt_us = Some(rtt);
                            }
                        }
                    }
                }
                RtcpPacket::TransportCc { .. } => twcc_feedback = true,
                RtcpPacket::SourceDescription
                | RtcpPacket::Bye { .. }
                | RtcpPacket::Other { .. } => {}
            }
        }
        if twcc_feedback {
            if let Some(d) = self.downlinks.get_mut(&transport) {
                for fb in crate::twcc::TwccFeedback::parse_compound(packet).flatten() {
                    self.stats.twcc_in += 1;
                    d.bwe.on_feedback(&fb, now_ms * 1000);
                    d.informed = true;
                }
            }
        }
    }

    /// A subscriber's estimate of its downlink. A marked drop on a video stream asks its publisher
    /// for less at the next poll instead of the next REMB interval.
    fn note_remb(&mut self, transport: TransportId, ssrc: u32, bps: u64) {
        let Some(track) = self
            .sub_by_ssrc
            .get(&(transport, ssrc))
            .and_then(|sub| self.sub_track.get(sub).map(|t| (*sub, *t)))
        else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&track.1) else {
            return;
        };
        let Some(s) = t.subs.iter_mut().find(|s| s.id == track.0) else {
            return;
        };
        let previous = s.stats.remb_bps.replace(bps);
        if t.kind == MediaKind::Video && previous.is_some_and(|p| bps < p - p / 10) {
            if let Some(p) = self.publishers.get_mut(&t.transport) {
                p.remb_due = true;
            }
        }
    }

    fn sub_mut(&mut self, transport: TransportId, ssrc: u32) -> Option<&mut Subscription> {
        let sub = *self.sub_by_ssrc.get(&(transport, ssrc))?;
        let track = *self.sub_track.get(&sub)?;
        self.tracks
            .get_mut(&track)?
            .subs
            .iter_mut()
            .find(|s| s.id == sub)
    }

    /// Report blocks about our subscription streams: loss, jitter, and the round-trip time when
    /// the block echoes one of our recent SRs (RTT = arrival − SR sent − DLSR, RFC 3550 6.4.1;
    /// measured on our own clock, so the NTP time we put in the SR need not be wall-clock time).
    fn note_reports(
        &mut self,
        transport: TransportId,
        reports: rtcp::ReportBlocks<'_>,
        now_ms: u64,
    ) {
        // Worst loss and latest round trip among the blocks about our streams, for the estimate.
        let mut link: Option<(u8, Option<u64>)> = None;
        for rb in reports.iter() {
            let Some(s) = self.sub_mut(transport, rb.ssrc) else {
                continue;
            };
            let l = link.get_or_insert((0, None));
            l.0 = l.0.max(rb.fraction_lost);
            s.stats.fraction_lost = Some(rb.fraction_lost);
            s.stats.cumulative_lost = Some(rb.cumulative_lost);
            s.stats.jitter = Some(rb.jitter);
            let Some(rtt_us) =
                rtt_from_echo(&s.sr_sent, rb.last_sr, rb.delay_since_last_sr, now_ms)
            else {
                continue;
            };
            s.stats.rtt_us = Some(rtt_us);
            self.stats.note_rtt(rtt_us);
            if let Some(l) = link.as_mut() {
                l.1 = Some(rtt_us);
            }
        }
        if let (Some((lost, rtt)), Some(d)) = (link, self.downlinks.get_mut(&transport)) {
            d.bwe.on_receiver_report(lost, rtt, now_ms * 1000);
            // A lossy report is news about the link even without REMB or transport-cc.
            d.informed |= lost >= LOSSY_FRACTION;
        }
    }

    fn forward_keyframe_request(
        &mut self,
        transport: TransportId,
        sub_ssrc: u32,
        fir: bool,
        now_ms: u64,
        out: &mut Output,
    ) {
        let Some(&sub) = self.sub_by_ssrc.get(&(transport, sub_ssrc)) else {
            return;
        };
        let Some(&track) = self.sub_track.get(&sub) else {
            return;
        };
        let Router {
            cfg,
            stats,
            publishers,
            tracks,
            events,
            ..
        } = self;
        let Some(t) = tracks.get_mut(&track) else {
            return;
        };
        if let Some(s) = t.subs.iter_mut().find(|s| s.id == sub) {
            if fir {
                s.stats.firs += 1;
            } else {
                s.stats.plis += 1;
            }
        }
        let reason = if fir {
            KeyframeReason::SubscriberFir
        } else {
            KeyframeReason::SubscriberPli
        };
        Self::send_pli(cfg, stats, events, publishers, t, reason, now_ms, out);
    }

    fn answer_nack(
        &mut self,
        transport: TransportId,
        media_ssrc: u32,
        items: rtcp::NackItems<'_>,
        budget: &mut usize,
        now_ms: u64,
        out: &mut Output,
    ) {
        let Some(&sub) = self.sub_by_ssrc.get(&(transport, media_ssrc)) else {
            return;
        };
        let Some(&track) = self.sub_track.get(&sub) else {
            return;
        };
        let Router {
            stats,
            tracks,
            cfg,
            downlinks,
            ..
        } = self;
        let Some(t) = tracks.get_mut(&track) else {
            return;
        };
        t.stats.nacks_in += 1;
        let Some(si) = t.subs.iter().position(|s| s.id == sub) else {
            return;
        };
        t.subs[si].stats.nacks += 1;
        let Track {
            subs,
            stats: track_stats,
            layered,
            seq,
            gaps,
            cache,
            pt_table,
            ..
        } = t;
        let sub = &mut subs[si];
        // A subscriber far away NACKs late: keep its round trips' worth of packets from now on.
        if let Some(rtt_us) = sub.stats.rtt_us {
            let ms = rtt_us / 1000 * NACK_HISTORY_RTTS;
            cache.want_history_ms(ms);
            if let Some(l) = layered.as_deref_mut() {
                l.want_history_ms(ms);
            }
        }
        let mut a = NackAnswer {
            stats,
            track: track_stats,
            cfg,
            downlinks,
            budget,
            now_ms,
            out,
        };
        if let Some(l) = layered.as_deref_mut() {
            return l.answer_nack(sub, &mut a, items);
        }
        let highest_c = seq.highest().map(|h| gaps.compress(h));
        for out_seq in items.seqs() {
            if !a.may_look(sub) {
                continue;
            }
            let found = match (sub.started, highest_c) {
                (true, Some(hc)) => {
                    let c = extend_u16(hc, out_seq.wrapping_sub(sub.seq_offset));
                    if c < sub.start_c || c > hc {
                        None
                    } else {
                        cache.get(gaps.decompress(c)).map(|p| (p, c))
                    }
                }
                _ => None,
            };
            let Some((p, c)) = found else {
                a.miss(sub);
                continue;
            };
            let sub_pt = sub.pt_map[p.payload_type as usize & 0x7f];
            if sub_pt == 0xff || !red_resendable(pt_table, &sub.pt_map, sub_pt, p) {
                a.unsendable();
                continue;
            }
            a.resend(sub, c, sub_pt, &MediaRef::from_cached(p, c));
        }
    }

    // ------------------------------------------------------------------ periodic

    /// Periodic work: to each publisher, about once per `remb_interval_ms` (and soon after a new video
    /// SSRC appears), a compound RR (reception quality of its streams) + REMB; PLIs for subscriptions
    /// still waiting for a keyframe; sender reports for subscriptions if enabled.
    pub fn poll(&mut self, now_ms: u64, out: &mut Output) {
        self.allocate(now_ms);
        let Router {
            cfg,
            stats,
            publishers,
            tracks,
            events,
            downlinks,
            allocation_stale,
            next_upkeep_ms,
            ..
        } = self;
        for (transport, p) in publishers.iter_mut() {
            if let Some(twcc) = p.twcc.as_mut() {
                let mut sent = 0;
                out.push_with(*transport, |b| sent = twcc.poll_feedback(now_ms * 1000, b));
                stats.twcc_out += sent as u64;
                stats.rtcp_packets_out += sent.min(1) as u64;
            }
        }
        let mut shares = None;
        for (transport, p) in publishers.iter_mut() {
            let due = p.remb_due
                || p.last_remb_ms
                    .is_none_or(|l| now_ms >= l.saturating_add(cfg.remb_interval_ms));
            if !due {
                continue;
            }
            let shares = &*shares.get_or_insert_with(|| video_shares(downlinks));
            let mut video = [0u32; 32];
            let mut n_video = 0;
            let mut remb_bps = 0u64;
            let mut blocks = [ReportBlock::default(); 31];
            let mut n_blocks = 0;
            for id in &p.tracks {
                let Some(t) = tracks.get_mut(id) else {
                    continue;
                };
                if t.kind == MediaKind::Video && n_video < video.len() {
                    if let Some(s) = t.feedback_ssrc() {
                        video[n_video] = s;
                        n_video += 1;
                        let target = track_target(cfg, t, shares);
                        t.stats.target_bitrate_bps = target;
                        remb_bps = remb_bps.saturating_add(target.unwrap_or(cfg.max_bitrate_bps));
                    }
                }
                if let Some(l) = t.layered.as_deref_mut() {
                    // A simulcast track: a block per layer, each on its own SSRC.
                    l.report_blocks(now_ms, blocks.len() - n_blocks, |rb| {
                        blocks[n_blocks] = rb;
                        n_blocks += 1;
                    });
                } else if let (Some(ssrc), true) = (t.media_ssrc, n_blocks < blocks.len()) {
                    let last_sr = t.stats.last_sr.map(|(ntp, _, at)| (ntp, at));
                    if let Some(rb) = t.reception.report_block(ssrc, now_ms, last_sr) {
                        blocks[n_blocks] = rb;
                        n_blocks += 1;
                    }
                }
            }
            if n_video == 0 && n_blocks == 0 {
                continue;
            }
            p.last_remb_ms = Some(now_ms);
            stats.rtcp_packets_out += 1;
            remb_bps = remb_bps.min(cfg.max_bitrate_bps);
            if n_video > 0 {
                p.remb_due = false;
                stats.remb_out += 1;
            }
            if n_blocks > 0 {
                stats.rr_out += 1;
            }
            let ntp = router_ntp(now_ms);
            if n_blocks > 0 {
                p.rrtr_sent[p.rrtr_next] = ((ntp >> 16) as u32, now_ms);
                p.rrtr_next = (p.rrtr_next + 1) % p.rrtr_sent.len();
            }
            out.push_with(*transport, |b| {
                // A compound packet starts with a report (RFC 3550 6.1); REMB rides along. The RRTR
                // asks the publisher to echo our time in a DLRR: our round trip toward it.
                if n_blocks > 0 {
                    rtcp::write_rr(b, p.rtcp_ssrc, &blocks[..n_blocks]);
                    rtcp::write_xr_rrtr(b, p.rtcp_ssrc, ntp);
                }
                if n_video > 0 {
                    rtcp::write_remb(b, p.rtcp_ssrc, remb_bps, &video[..n_video]);
                }
            });
        }
        // NACKs and a new subscriber's keyframe request go out at every poll; what runs on
        // seconds (rate samples, silence, sender reports, keyframe retries) every UPKEEP_MS, so a
        // poll of a quiet room does not walk every subscription.
        let upkeep = now_ms >= *next_upkeep_ms;
        if upkeep {
            // On a grid of UPKEEP_MS, which divides RATE_SAMPLE_MS: a caller polling on it sees
            // samples exactly every RATE_SAMPLE_MS.
            *next_upkeep_ms = (now_ms / UPKEEP_MS + 1) * UPKEEP_MS;
        }
        for t in tracks.values_mut() {
            if upkeep {
                *allocation_stale |= Self::track_activity(cfg, stats, events, t, now_ms);
                let had_sink = t.has_sink;
                t.has_sink = t.subs.iter().any(|s| s.sink.is_some());
                if had_sink && !t.has_sink {
                    t.cache.reclaim();
                }
            }
            if !t.missing.is_empty() || t.layered.as_deref().is_some_and(|l| l.any_missing()) {
                Self::nack_missing(stats, publishers, t, now_ms, out);
            }
            if t.has_sink {
                // Every poll: it runs the recording jitter buffers' timers.
                Self::sink_keyframe_requests(cfg, stats, events, publishers, t, now_ms, out);
            }
            if !upkeep && !t.pli_pending {
                continue;
            }
            if upkeep && cfg.sender_reports {
                Self::sender_reports(cfg, stats, t, now_ms, out);
            }
            if !t.waiting_subs() {
                t.pli_pending = false;
                continue;
            }
            let retry_due = t
                .last_pli_ms
                .is_none_or(|l| now_ms >= l.saturating_add(cfg.keyframe_retry_ms));
            if t.pli_pending || retry_due {
                let reason = if t.pli_pending {
                    KeyframeReason::NewSubscriber
                } else {
                    KeyframeReason::Retry
                };
                Self::send_pli(cfg, stats, events, publishers, t, reason, now_ms, out);
            }
        }
    }

    /// Bitrate samples (every `RATE_SAMPLE_MS`) for the track and its subscriptions, and the
    /// `TrackStopped` event once the track has been silent for `track_timeout_ms`. True if a
    /// subscription's bitrate was sampled.
    fn track_activity(
        cfg: &RouterConfig,
        stats: &mut RouterStats,
        events: &mut Vec<RouterEvent>,
        t: &mut Track,
        now_ms: u64,
    ) -> bool {
        if t.stats.active && now_ms >= t.last_packet_ms.saturating_add(cfg.track_timeout_ms) {
            t.stats.active = false;
            stats.tracks_stopped += 1;
            push_event(events, stats, RouterEvent::TrackStopped { track: t.id });
        }
        if t.rate.due(now_ms) {
            t.stats.bitrate_bps = t.rate.sample(now_ms, t.stats.bytes);
        }
        let mut sampled = false;
        for sub in &mut t.subs {
            if sub.rate.due(now_ms) {
                sub.stats.bitrate_bps = sub.rate.sample(now_ms, sub.stats.bytes);
                sampled = true;
            }
        }
        sampled
    }

    /// Generic NACKs to the publisher naming the track's missing packets that are due: one for a
    /// single-layer track, one per layer SSRC with losses for a simulcast track.
    fn nack_missing(
        stats: &mut RouterStats,
        publishers: &FastMap<TransportId, Publisher>,
        t: &mut Track,
        now_ms: u64,
        out: &mut Output,
    ) {
        let Some(p) = publishers.get(&t.transport) else {
            t.missing.clear();
            return;
        };
        let mut named = |missing: &mut Vec<Missing>, media_ssrc: Option<u32>| {
            let Some(media_ssrc) = media_ssrc else {
                missing.clear();
                return;
            };
            let n = write_due_nack(missing, p.rtcp_ssrc, media_ssrc, t.transport, now_ms, out);
            if n > 0 {
                stats.nacks_out += 1;
                stats.rtcp_packets_out += 1;
                t.stats.nacks_out += 1;
                t.stats.nack_seqs_out += n as u64;
            }
        };
        match t.layered.as_deref_mut() {
            Some(l) => l.each_missing(|missing, ssrc| named(missing, ssrc)),
            None => named(&mut t.missing, t.media_ssrc),
        }
    }

    /// Sender reports for a track's started subscriptions. Their NTP/RTP pair is the publisher's last
    /// SR moved forward to `now_ms` and into each subscriber's timestamp space, so audio and video of
    /// one publisher stay in sync at the receiver. A simulcast subscriber's comes from the report
    /// on the layer it was last sent (each layer has its own timestamp base).
    fn sender_reports(
        cfg: &RouterConfig,
        stats: &mut RouterStats,
        t: &mut Track,
        now_ms: u64,
        out: &mut Output,
    ) {
        let clock_rate = t.last_media_pt.map_or(90_000, |pt| t.clock_rate(pt));
        let track_sr = t.stats.last_sr;
        let layered = t.layered.as_deref();
        if layered.is_none() && track_sr.is_none() {
            return;
        }
        // A sink reads the publisher's mapping itself (`Router::sink_sync`); it takes no RTCP.
        for sub in t.subs.iter_mut().filter(|s| s.started && s.sink.is_none()) {
            if sub
                .last_sr_sent_ms
                .is_some_and(|l| now_ms < l.saturating_add(cfg.sr_interval_ms))
            {
                continue;
            }
            let basis = match layered {
                Some(l) => sub
                    .last_out
                    .and_then(|(seq, _, _)| l.report_basis(sub.id, seq)),
                None => track_sr.map(|sr| (sr, sub.ts_offset)),
            };
            let Some(((ntp, rtp_ts, at_ms), ts_offset)) = basis else {
                continue;
            };
            let elapsed_ms = now_ms.saturating_sub(at_ms);
            let ntp_now = ntp.wrapping_add(((elapsed_ms as u128) << 32) as u64 / 1000);
            let rtp_advance = (elapsed_ms as u128 * clock_rate as u128 / 1000) as u32;
            sub.last_sr_sent_ms = Some(now_ms);
            sub.stats.sender_reports += 1;
            stats.sr_out += 1;
            stats.rtcp_packets_out += 1;
            let rtp_now = rtp_ts.wrapping_add(rtp_advance).wrapping_add(ts_offset);
            sub.sr_sent[sub.sr_sent_next] = ((ntp_now >> 16) as u32, now_ms);
            sub.sr_sent_next = (sub.sr_sent_next + 1) % sub.sr_sent.len();
            let packets = (sub.stats.packets + sub.stats.retransmissions) as u32;
            let octets = (sub.stats.payload_bytes + sub.stats.retransmission_payload_bytes) as u32;
            out.push_with(sub.transport, |b| {
                rtcp::write_sr(b, sub.ssrc, ntp_now, rtp_now, packets, octets, &[])
            });
        }
    }
}

/// What each subscriber transport's estimate leaves for one video stream it receives: the estimate
/// minus the audio it receives, split evenly over its video streams (`Router::allocate` counted
/// them). Transports that reported nothing on their link are absent: they constrain no one.
fn video_shares(downlinks: &FastMap<TransportId, Downlink>) -> FastMap<TransportId, u64> {
    downlinks
        .iter()
        .filter(|(_, d)| d.video_streams > 0)
        .filter_map(|(k, d)| d.video_share().map(|s| (*k, s)))
        .collect()
}

/// The bitrate to ask of one video track: the lowest share among its viewers' links (audio comes
/// first on each link), but never below the floor: with one viewer (a 1:1 visit) that viewer's
/// link shapes the encoder down to `min_bitrate_bps`; in a group one very poor viewer does not
/// pull everyone below `group_floor_bps`. None when no viewer reported an estimate.
fn track_target(cfg: &RouterConfig, t: &Track, shares: &FastMap<TransportId, u64>) -> Option<u64> {
    let viewers = || t.subs.iter().filter(|s| s.sink.is_none());
    let each = viewers().filter_map(|s| shares.get(&s.transport).copied());
    // A simulcast publisher serves every viewer its own layer: the best-placed viewer sets the rate
    // (a poor one gets a lower layer instead of lowering everyone's).
    let share = if t.layered.is_some() {
        each.max()?
    } else {
        each.min()?
    };
    let floor = if viewers().count() > 1 {
        cfg.group_floor_bps
    } else {
        cfg.min_bitrate_bps
    };
    Some(share.max(floor).min(cfg.max_bitrate_bps))
}

/// A RED packet is resent only to a subscriber that was sent it unchanged (the same block payload
/// types): one that got it rewritten or unwrapped is not answered (it is audio, which browsers do
/// not NACK). Anything that is not RED is resendable.
fn red_resendable(
    pt_table: &[PtEntry; 128],
    map: &[u8; 128],
    sub_pt: u8,
    p: &CachedPacket,
) -> bool {
    use crate::red::{RedForward, RedPayload};
    match pt_table[p.payload_type as usize & 0x7f] {
        PtEntry::Media {
            kind: CodecKind::Red,
            ..
        } => RedPayload::parse(p.payload())
            .is_ok_and(|r| r.forward_as(p.payload(), map, sub_pt) == RedForward::AsIs(sub_pt)),
        _ => true,
    }
}

/// Answering one subscriber's NACK, shared by single-layer and simulcast tracks: the per-datagram
/// budget, a paused subscriber's silence, miss counting, the once-per-round-trip rule and byte
/// budget of its `ResendGate`, and the write and counters of a retransmission. Each kind of track
/// only finds the packet a number names and how it was sent.
pub(super) struct NackAnswer<'a> {
    pub stats: &'a mut RouterStats,
    pub track: &'a mut TrackStats,
    pub cfg: &'a RouterConfig,
    pub downlinks: &'a mut FastMap<TransportId, Downlink>,
    /// Retransmissions this RTCP datagram may still make.
    pub budget: &'a mut usize,
    pub now_ms: u64,
    pub out: &'a mut Output,
}

impl NackAnswer<'_> {
    /// Whether a NACKed number is worth looking up (counted when not).
    pub fn may_look(&mut self, sub: &Subscription) -> bool {
        if *self.budget == 0 {
            self.stats.drop(DropReason::NackLimited);
            return false;
        }
        if sub.paused {
            self.stats.drop(DropReason::VideoPaused);
            return false;
        }
        true
    }

    /// A number that names nothing we still have.
    pub fn miss(&mut self, sub: &mut Subscription) {
        sub.stats.nack_misses += 1;
        self.stats.drop(DropReason::NackMiss);
    }

    /// A packet we have but cannot send this subscriber (its codec or RED form).
    pub fn unsendable(&mut self) {
        self.stats.drop(DropReason::NackMiss);
    }

    /// Resends `m` (`key` identifies it in the subscriber's `ResendGate`) unless it went less than
    /// a round trip ago or the subscriber's budget is spent. True if it was written.
    pub fn resend(
        &mut self,
        sub: &mut Subscription,
        key: u64,
        sub_pt: u8,
        m: &MediaRef<'_>,
    ) -> bool {
        // The subscriber's link: its estimate (transport-cc, else REMB and loss), else what we
        // let publishers send.
        let dl = self.downlinks.get_mut(&sub.transport);
        let estimate = dl
            .as_ref()
            .and_then(|d| d.estimate())
            .or(sub.stats.remb_bps)
            .unwrap_or(self.cfg.max_bitrate_bps);
        let allowance = resend::allowance_bps(estimate, sub.stats.bitrate_bps);
        let rtt_ms = sub.stats.rtt_us.map(|us| us / 1000);
        let wire = m.payload.len() + RTP_OVERHEAD_BYTES;
        match sub.resend.admit(key, wire, self.now_ms, rtt_ms, allowance) {
            Ok(()) => {}
            Err(resend::Refusal::TooSoon) => {
                sub.stats.nack_too_soon += 1;
                self.stats.drop(DropReason::NackTooSoon);
                return false;
            }
            Err(resend::Refusal::OverBudget) => {
                sub.stats.nack_over_budget += 1;
                self.stats.drop(DropReason::NackOverBudget);
                return false;
            }
        }
        *self.budget -= 1;
        let (_, _, len) = write_for_sub(self.out, sub, dl, sub_pt, m, self.now_ms);
        sub.stats.retransmissions += 1;
        sub.stats.retransmission_payload_bytes += m.payload.len() as u64;
        self.track.retransmissions += 1;
        self.stats.retransmissions_out += 1;
        self.stats.retransmission_bytes_out += len as u64;
        self.stats.rtp_packets_out += 1;
        self.stats.rtp_bytes_out += len as u64;
        true
    }
}

/// Writes one generic NACK naming the entries of `missing` that are due (each asked for at most
/// `NACK_TRIES` times, `NACK_RETRY_MS` apart); returns how many it named.
fn write_due_nack(
    missing: &mut Vec<Missing>,
    rtcp_ssrc: u32,
    media_ssrc: u32,
    transport: TransportId,
    now_ms: u64,
    out: &mut Output,
) -> usize {
    let mut seqs = [0u16; MAX_MISSING_PER_TRACK];
    let mut n = 0;
    for m in missing.iter_mut().filter(|m| m.next_ms <= now_ms) {
        seqs[n] = m.ext as u16;
        n += 1;
        m.tries += 1;
        m.next_ms = now_ms + NACK_RETRY_MS;
    }
    missing.retain(|m| m.tries < NACK_TRIES);
    if n > 0 {
        out.push_with(transport, |b| {
            rtcp::write_nack(b, rtcp_ssrc, media_ssrc, &seqs[..n])
        });
    }
    n
}
