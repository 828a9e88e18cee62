//! Recording sinks: subscriptions whose stream goes into a jitter buffer inside the router instead of
//! to a transport (mediasoup would call it a direct consumer). The recorder never sees a packet: the
//! worker that routes the publisher's RTP puts the subscription's rewritten header fields and the
//! payload — a reference to the NACK cache's copy, not another copy — into the sink's buffer, and the
//! control plane takes complete frames out in batches (`JitterBuffer::pop_frames_with`), which is
//! the one copy of the media the recorder makes.
//!
//! Loss is repaired upstream by the router's own NACKs to the publisher (a retransmission reaches every
//! subscription, the sink included), so a sink never NACKs; when its buffer gives up a video frame it
//! asks for a keyframe, which the router sends as a throttled PLI.

use super::*;
use crate::jitter::{FrameCodec, JitterBuffer, JitterConfig, JitterEvent, JitterStats};

/// The transport id all sinks are filed under; never a real transport (the control plane numbers
/// those from 1 upward).
pub const SINK_TRANSPORT: TransportId = TransportId(u64::MAX);

/// A sink's buffer: it holds the payloads of the router's NACK cache (shared, not copied).
pub type SinkBuffer = JitterBuffer<Arc<Vec<u8>>>;

/// One recording sink: the jitter buffer of its subscription's stream.
pub struct Sink {
    jb: SinkBuffer,
}

impl Sink {
    pub(super) fn push(&mut self, header: RtpFields, payload: Arc<Vec<u8>>, now_ms: u64) {
        // A refused packet (duplicate, late) is counted by the buffer.
        self.jb.push_payload(header, payload, now_ms);
    }

    pub fn buffer(&mut self) -> &mut SinkBuffer {
        &mut self.jb
    }
}

impl Router {
    /// Adds a sink for `track`: packets of the publisher's payload type `payload_type` (which must
    /// be the track's `codec`) are written, rewritten as for any subscription, into a jitter buffer
    /// configured by `cfg` (its codec is `codec`; NACKs are switched off, see the module comment).
    pub fn add_sink(
        &mut self,
        sub: SubscriptionId,
        track: TrackId,
        codec: FrameCodec,
        payload_type: u8,
        mut cfg: JitterConfig,
    ) -> Result<(), RouterError> {
        let t = self
            .tracks
            .get(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        let known = t
            .codecs
            .iter()
            .find(|c| c.payload_type == payload_type)
            .ok_or_else(|| {
                RouterError::Invalid(format!("track {track} has no payload type {payload_type}"))
            })?;
        if FrameCodec::from_name(&known.name) != Some(codec) {
            return Err(RouterError::Invalid(format!(
                "payload type {payload_type} of track {track} is {}, not {codec:?}",
                known.name
            )));
        }
        let only = Codec {
            payload_type,
            ..known.clone()
        };
        let ssrc = loop {
            let s = self.rng.next() as u32;
            if s != 0 && !self.sub_by_ssrc.contains_key(&(SINK_TRANSPORT, s)) {
                break s;
            }
        };
        self.add_subscription(
            sub,
            track,
            SINK_TRANSPORT,
            ssrc,
            &[only],
            ExtensionIds::default(),
        )?;
        cfg.codec = codec;
        cfg.max_nack_retries = 0;
        let t = self.tracks.get_mut(&track).expect("subscribed above");
        let s = t
            .subs
            .iter_mut()
            .find(|s| s.id == sub)
            .expect("added above");
        s.sink = Some(Box::new(Sink {
            jb: JitterBuffer::with_packet_buf(cfg),
        }));
        t.has_sink = true;
        Ok(())
    }

    /// The sink of subscription `sub`, if it is one.
    pub fn sink_mut(&mut self, sub: SubscriptionId) -> Option<&mut Sink> {
        let t = self.tracks.get_mut(self.sub_track.get(&sub)?)?;
        t.subs.iter_mut().find(|s| s.id == sub)?.sink.as_deref_mut()
    }

    /// Whether subscription `sub` is a sink.
    pub fn is_sink(&self, sub: SubscriptionId) -> bool {
        self.sub_track
            .get(&sub)
            .and_then(|t| self.tracks.get(t))
            .and_then(|t| t.subs.iter().find(|s| s.id == sub))
            .is_some_and(|s| s.sink.is_some())
    }

    /// The counters of sink `sub`'s buffer, if it is a sink.
    pub fn sink_stats(&self, sub: SubscriptionId) -> Option<JitterStats> {
        let t = self.tracks.get(self.sub_track.get(&sub)?)?;
        let s = t.subs.iter().find(|s| s.id == sub)?;
        s.sink.as_ref().map(|k| k.jb.stats().clone())
    }

    /// The publisher's last sender report in the sink's terms: (NTP timestamp, RTP timestamp
    /// extended like the sink's frame timestamps). None before the first SR, or before the sink's
    /// stream started.
    pub fn sink_sync(&self, sub: SubscriptionId) -> Option<(u64, u64)> {
        let t = self.tracks.get(self.sub_track.get(&sub)?)?;
        let s = t.subs.iter().find(|s| s.id == sub)?;
        if !s.started {
            return None;
        }
        // A simulcast track's: the report on the layer the sink was last given, in its timestamps.
        let ((ntp, rtp_ts, _), ts_offset) = match t.layered.as_deref() {
            Some(l) => l.report_basis(sub, s.last_out?.0)?,
            None => (t.stats.last_sr?, s.ts_offset),
        };
        let ext = s
            .sink
            .as_ref()?
            .jb
            .extend_timestamp(rtp_ts.wrapping_add(ts_offset))?;
        Some((ntp, ext))
    }

    /// One throttled PLI when a sink of the track needs a keyframe to continue.
    pub(super) fn sink_keyframe_requests(
        cfg: &RouterConfig,
        stats: &mut RouterStats,
        events: &mut Vec<RouterEvent>,
        publishers: &FastMap<TransportId, Publisher>,
        t: &mut Track,
        now_ms: u64,
        out: &mut Output,
    ) {
        let mut wanted = false;
        for sink in t.subs.iter_mut().filter_map(|s| s.sink.as_deref_mut()) {
            wanted |= sink.jb.poll(now_ms).contains(&JitterEvent::KeyframeRequest);
        }
        if wanted {
            Self::send_pli(
                cfg,
                stats,
                events,
                publishers,
                t,
                KeyframeReason::Recorder,
                now_ms,
                out,
            );
        }
    }
}
