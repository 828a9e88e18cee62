//! Public vocabulary of the router: ids, codecs, extension ids, configuration, errors and counters.

use std::fmt;

use crate::nack_cache::NackCache;

pub use crate::ids::{SubscriptionId, TrackId, TransportId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn parse(s: &str) -> Result<Self, RouterError> {
        match s {
            "audio" => Ok(MediaKind::Audio),
            "video" => Ok(MediaKind::Video),
            other => Err(RouterError::Invalid(format!(
                "kind must be 'audio' or 'video', not {other:?}"
            ))),
        }
    }
}

/// A negotiated codec: (payload type, name such as "VP8" or "rtx", clock rate, apt for rtx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub name: String,
    pub clock_rate: u32,
    pub apt: Option<u8>,
    /// The codec's fmtp line (e.g. "packetization-mode=1;profile-level-id=42e01f"), if known.
    pub fmtp: Option<String>,
}

/// Negotiated header-extension ids of one side (0 = not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub mid: u8,
    pub abs_send_time: u8,
    pub audio_level: u8,
    pub transport_cc: u8,
}

impl ExtensionIds {
    /// From (short name, id) pairs; names the router does not use are ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, u8)>,
    ) -> Result<Self, RouterError> {
        let mut ids = ExtensionIds::default();
        for (name, id) in pairs {
            let slot = match name {
                "mid" => &mut ids.mid,
                "abs-send-time" => &mut ids.abs_send_time,
                "audio-level" => &mut ids.audio_level,
                "transport-cc" => &mut ids.transport_cc,
                _ => continue,
            };
            if id == 0 || id == 15 {
                return Err(RouterError::Invalid(format!(
                    "extension id {id} for {name:?} is reserved"
                )));
            }
            *slot = id;
        }
        Ok(ids)
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Most a publisher is asked to send in REMB (total for its video SSRCs).
    pub max_bitrate_bps: u64,
    /// Least a track's video is asked for when one subscriber watches it (a 1:1 visit: the viewer's
    /// downlink shapes the publisher's encoder down to this).
    pub min_bitrate_bps: u64,
    /// Least a track's video is asked for when several subscribers watch it: one very poor viewer
    /// does not pull everyone's video below this.
    pub group_floor_bps: u64,
    /// Most packets a track's retransmission ring grows to.
    pub nack_cache_packets: usize,
    /// Least media time (by RTP timestamps) a track's ring keeps (grown for subscribers with long
    /// round trips: `NACK_HISTORY_RTTS` of their RTT). Rings start at `AUDIO_CACHE_START` /
    /// `VIDEO_CACHE_START` packets and double while they hold less than this.
    pub nack_history_ms: u64,
    /// Minimum gap between two PLIs sent for one track.
    pub pli_min_interval_ms: u64,
    /// How often REMB is repeated to each publisher.
    pub remb_interval_ms: u64,
    /// How often a PLI is repeated while a subscription still waits for a keyframe.
    pub keyframe_retry_ms: u64,
    /// Whether `poll` sends RTCP sender reports for subscriptions (needs the publisher's SR to map
    /// RTP time to NTP time). Off while another stack (aiortc) still reports on the same SSRCs.
    pub sender_reports: bool,
    /// How often a sender report goes out per subscription.
    pub sr_interval_ms: u64,
    /// A track that has sent nothing for this long is reported stopped (`RouterEvent::TrackStopped`).
    pub track_timeout_ms: u64,
    /// A subscriber's bandwidth estimate before its link has told us anything.
    pub bwe_start_bps: u64,
    /// Lowest usable rate of one video stream: a subscriber whose estimate leaves less (after its
    /// audio) gets its video paused, audio only.
    pub video_pause_bps: u64,
    /// Paused video resumes once each stream's share has stayed above this for
    /// `video_resume_hold_ms` (hysteresis: above `video_pause_bps`).
    pub video_resume_bps: u64,
    pub video_resume_hold_ms: u64,
    /// Pace a transport-cc subscriber's video near its estimate once what it is sent comes close
    /// to the estimate (audio is never held): a keyframe then does not fill the bottleneck's queue
    /// that the audio waits in.
    pub pacing: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_bitrate_bps: 2_500_000,
            min_bitrate_bps: 50_000,
            group_floor_bps: 150_000,
            nack_cache_packets: 1024,
            nack_history_ms: 500,
            pli_min_interval_ms: 200,
            remb_interval_ms: 1000,
            keyframe_retry_ms: 1000,
            sender_reports: false,
            sr_interval_ms: 1000,
            track_timeout_ms: 3000,
            bwe_start_bps: 1_000_000,
            video_pause_bps: 150_000,
            video_resume_bps: 200_000,
            video_resume_hold_ms: 2000,
            pacing: true,
        }
    }
}

/// Packets a track's retransmission ring starts with: 0.5 s of Opus at 20 ms frames is 25
/// packets; 128 video packets are 0.6-0.8 s at 1.5 Mbit/s. Faster streams grow their ring.
pub const AUDIO_CACHE_START: usize = 32;
pub const VIDEO_CACHE_START: usize = 128;
/// Most packets one simulcast layer's ring grows to.
pub const LAYER_CACHE_PACKETS: usize = 512;
/// Round trips of a subscriber's link a track's ring keeps (its NACKs, and their retries, come
/// about one RTT after the loss).
pub const NACK_HISTORY_RTTS: u64 = 4;

impl RouterConfig {
    /// An empty retransmission ring for a new track of `kind`.
    pub fn track_cache(&self, kind: MediaKind) -> NackCache {
        let start = match kind {
            MediaKind::Audio => AUDIO_CACHE_START,
            MediaKind::Video => VIDEO_CACHE_START,
        };
        let most = self.nack_cache_packets;
        NackCache::growing(start.min(most), most, self.nack_history_ms)
    }

    /// An empty retransmission ring for one spatial layer of a simulcast track: sized like a
    /// video track's, by media time, up to `LAYER_CACHE_PACKETS` whatever the rooms' setting
    /// (a top layer carries more packets a second than one stream of a room's usual rate).
    pub fn layer_cache(&self) -> NackCache {
        NackCache::growing(VIDEO_CACHE_START, LAYER_CACHE_PACKETS, self.nack_history_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    Duplicate(&'static str, u64),
    UnknownTransport(TransportId),
    UnknownTrack(TrackId),
    SsrcInUse(u32),
    Invalid(String),
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::Duplicate(what, id) => write!(f, "{what} {id} already exists"),
            RouterError::UnknownTransport(t) => {
                write!(
                    f,
                    "transport {t} is not a publisher: call add_publisher first"
                )
            }
            RouterError::UnknownTrack(t) => write!(f, "unknown track {t}"),
            RouterError::SsrcInUse(s) => write!(f, "SSRC {s} is already used on this transport"),
            RouterError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for RouterError {}

/// Why a packet (or a packet for one subscriber) was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    Malformed,
    UnknownSsrc,
    UnknownPayloadType,
    WaitingKeyframe,
    PaddingOnly,
    RtxUnwrapFailed,
    MalformedRtcp,
    NackMiss,
    Duplicate,
    TooOld,
    BeforeSubscriptionStart,
    CodecNotNegotiated,
    NackLimited,
    /// A NACK for a packet resent to that subscriber less than a round trip ago.
    NackTooSoon,
    /// A NACK beyond the subscriber's retransmission budget.
    NackOverBudget,
    /// Video not sent: the subscriber's bandwidth estimate leaves too little for it (paused).
    VideoPaused,
    /// RFC 2198 RED whose block headers do not fit its payload (or that has no primary data).
    MalformedRed,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        DropReason::Malformed,
        DropReason::UnknownSsrc,
        DropReason::UnknownPayloadType,
        DropReason::WaitingKeyframe,
        DropReason::PaddingOnly,
        DropReason::RtxUnwrapFailed,
        DropReason::MalformedRtcp,
        DropReason::NackMiss,
        DropReason::Duplicate,
        DropReason::TooOld,
        DropReason::BeforeSubscriptionStart,
        DropReason::CodecNotNegotiated,
        DropReason::NackLimited,
        DropReason::NackTooSoon,
        DropReason::NackOverBudget,
        DropReason::VideoPaused,
        DropReason::MalformedRed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::UnknownPayloadType => "unknown_payload_type",
            DropReason::WaitingKeyframe => "waiting_keyframe",
            DropReason::PaddingOnly => "padding_only",
            DropReason::RtxUnwrapFailed => "rtx_unwrap_failed",
            DropReason::MalformedRtcp => "malformed_rtcp",
            DropReason::NackMiss => "nack_miss",
            DropReason::Duplicate => "duplicate",
            DropReason::TooOld => "too_old",
            DropReason::BeforeSubscriptionStart => "before_subscription_start",
            DropReason::CodecNotNegotiated => "codec_not_negotiated",
            DropReason::NackLimited => "nack_limited",
            DropReason::NackTooSoon => "nack_too_soon",
            DropReason::NackOverBudget => "nack_over_budget",
            DropReason::VideoPaused => "video_paused",
            DropReason::MalformedRed => "malformed_red",
        }
    }
}

/// Why a keyframe request (PLI) went to a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum KeyframeReason {
    /// A subscriber sent a PLI.
    SubscriberPli,
    /// A subscriber sent a FIR.
    SubscriberFir,
    /// A new (or resumed) subscription waits for its first keyframe.
    NewSubscriber,
    /// A subscription still waits for a keyframe after `keyframe_retry_ms`.
    Retry,
    /// The control plane asked (`request_keyframe`).
    Requested,
    /// A recording sink's jitter buffer lost a frame and needs a keyframe to continue.
    Recorder,
}

impl KeyframeReason {
    pub const ALL: [KeyframeReason; 6] = [
        KeyframeReason::SubscriberPli,
        KeyframeReason::SubscriberFir,
        KeyframeReason::NewSubscriber,
        KeyframeReason::Retry,
        KeyframeReason::Requested,
        KeyframeReason::Recorder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyframeReason::SubscriberPli => "subscriber_pli",
            KeyframeReason::SubscriberFir => "subscriber_fir",
            KeyframeReason::NewSubscriber => "new_subscriber",
            KeyframeReason::Retry => "retry",
            KeyframeReason::Requested => "requested",
            KeyframeReason::Recorder => "recorder",
        }
    }
}

/// Something the control plane may want to know, drained with `Router::take_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterEvent {
    /// The first media packet of a track arrived (again, after it had stopped).
    TrackStarted { track: TrackId },
    /// No packet of a started track for `track_timeout_ms`.
    TrackStopped { track: TrackId },
    /// A PLI went to the track's publisher (throttled requests produce no event).
    KeyframeRequested {
        track: TrackId,
        reason: KeyframeReason,
    },
    /// The subscriber transport's estimate leaves too little for its video: video paused, audio
    /// continues.
    VideoPaused {
        transport: TransportId,
        estimate_bps: u64,
    },
    /// Its estimate recovered (held above the resume threshold): video resumes at a keyframe.
    VideoResumed {
        transport: TransportId,
        estimate_bps: u64,
    },
}

/// Upper bounds (ms) of the round-trip-time histogram buckets; one more bucket holds the rest.
pub const RTT_BUCKETS_MS: [u64; 9] = [5, 10, 25, 50, 100, 200, 400, 800, 1600];

/// Room-wide counters. `payload_bytes_in` counts each unique media packet's payload once (RTX copies
/// and duplicates excluded); `payload_bytes_out` counts first transmissions only, so for a stream
/// forwarded to N subscribers from its first packet, payload_bytes_out == N × payload_bytes_in.
/// The `_out` counters are what goes to transports: recording sinks are not counted there (their
/// subscription stats and the recorder's counters say what they took).
#[derive(Debug, Clone, Default)]
pub struct RouterStats {
    pub rtp_packets_in: u64,
    pub rtp_bytes_in: u64,
    pub payload_bytes_in: u64,
    pub rtp_packets_out: u64,
    pub rtp_bytes_out: u64,
    pub payload_bytes_out: u64,
    pub retransmissions_out: u64,
    pub retransmission_bytes_out: u64,
    pub keyframes_in: u64,
    pub rtx_in: u64,
    pub nacks_in: u64,
    pub plis_in: u64,
    pub firs_in: u64,
    pub remb_in: u64,
    pub plis_out: u64,
    pub plis_throttled: u64,
    /// NACK packets sent to publishers for packets lost on the way in.
    pub nacks_out: u64,
    pub remb_out: u64,
    pub rr_out: u64,
    pub sr_out: u64,
    pub rtcp_packets_in: u64,
    pub rtcp_packets_out: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    /// PLIs sent to publishers, by reason (sums to `plis_out`).
    pub keyframe_requests: [u64; KeyframeReason::ALL.len()],
    pub tracks_started: u64,
    pub tracks_stopped: u64,
    /// Events not kept because nobody drained them (the queue is bounded).
    pub events_dropped: u64,
    /// Subscriber round-trip times measured from their receiver reports: count per bucket of
    /// `RTT_BUCKETS_MS` (last: above the largest), their number and sum in microseconds.
    pub rtt_buckets: [u64; RTT_BUCKETS_MS.len() + 1],
    pub rtt_samples: u64,
    pub rtt_sum_us: u64,
    /// Transport-cc feedback packets from subscribers, and sent to publishers.
    pub twcc_in: u64,
    pub twcc_out: u64,
    /// Subscriber transports whose video was paused (their estimate too low) and resumed.
    pub video_pauses: u64,
    pub video_resumes: u64,
    /// Padding-only probe packets sent to paused subscribers.
    pub padding_out: u64,
    /// Audio frames lost on the way in and recovered from the next RED packet's redundancy (for
    /// subscribers that get RED's primary alone).
    pub red_recovered: u64,
}

impl RouterStats {
    pub(crate) fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
    pub fn keyframe_requests(&self, r: KeyframeReason) -> u64 {
        self.keyframe_requests[r as usize]
    }
    pub(crate) fn note_rtt(&mut self, rtt_us: u64) {
        let i = RTT_BUCKETS_MS
            .iter()
            .position(|le| rtt_us <= le * 1000)
            .unwrap_or(RTT_BUCKETS_MS.len());
        self.rtt_buckets[i] += 1;
        self.rtt_samples += 1;
        self.rtt_sum_us += rtt_us;
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub keyframes: u64,
    pub rtx_packets: u64,
    pub duplicates: u64,
    pub padding_only: u64,
    /// Frames lost on the way in and recovered from RED redundancy (`RouterStats::red_recovered`).
    pub red_recovered: u64,
    pub plis_out: u64,
    pub nacks_in: u64,
    pub retransmissions: u64,
    /// NACK packets sent to the publisher, and the sequence numbers they named.
    pub nacks_out: u64,
    pub nack_seqs_out: u64,
    pub last_seq: Option<u16>,
    /// Publisher-side loss (expected minus received, RFC 3550) and interarrival jitter (RTP units).
    pub lost: i64,
    pub jitter: u32,
    pub media_ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub subscriptions: usize,
    /// Last sender report from the publisher: (NTP timestamp, RTP timestamp, when it arrived).
    pub last_sr: Option<(u64, u32, u64)>,
    /// Whether packets are arriving (started and not timed out).
    pub active: bool,
    /// Round-trip time toward the publisher (from its XR DLRR echo of our RRTR), if it echoes.
    pub rtt_us: Option<u64>,
    /// Received RTP bytes per second ×8 over the last `BITRATE_WINDOW` (headers and RTX included).
    pub bitrate_bps: u64,
    /// This video track's part of the last REMB sent to its publisher (what its subscribers' links
    /// take), if any subscriber reported an estimate.
    pub target_bitrate_bps: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriptionStats {
    pub ssrc: u32,
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub keyframes: u64,
    pub retransmissions: u64,
    pub retransmission_payload_bytes: u64,
    pub sender_reports: u64,
    pub nacks: u64,
    pub nack_misses: u64,
    /// NACKed packets not resent: resent less than a round trip ago, or over the budget.
    pub nack_too_soon: u64,
    pub nack_over_budget: u64,
    pub plis: u64,
    pub firs: u64,
    pub waiting_keyframe: bool,
    pub dropped_waiting_keyframe: u64,
    pub last_seq: Option<u16>,
    pub last_timestamp: Option<u32>,
    pub remb_bps: Option<u64>,
    pub fraction_lost: Option<u8>,
    pub cumulative_lost: Option<i32>,
    pub jitter: Option<u32>,
    /// Round-trip time from the subscriber's last receiver report echoing one of our SRs.
    pub rtt_us: Option<u64>,
    /// Sent RTP bytes per second ×8 over the last `BITRATE_WINDOW` (first transmissions only).
    pub bitrate_bps: u64,
    /// The subscriber transport's bandwidth estimate (None until its link reported anything).
    pub estimate_bps: Option<u64>,
    /// Video of this subscription is paused for lack of bandwidth.
    pub paused: bool,
    /// Packets not sent while paused.
    pub dropped_paused: u64,
}

/// One subscriber transport's downlink: estimate, allocation and what was sent to probe it.
#[derive(Debug, Clone, Default)]
pub struct DownlinkStats {
    pub transport_cc: bool,
    pub estimate_bps: Option<u64>,
    pub audio_bps: u64,
    pub video_streams: u64,
    pub video_paused: bool,
    pub pauses: u64,
    pub padding_packets: u64,
    pub padding_bytes: u64,
    /// Whether its video is paced now, and the video packets the pacer held and dropped so far.
    pub pacing: bool,
    pub paced: u64,
    pub paced_dropped: u64,
    /// RED audio goes to it as the primary alone now (its link too tight for the redundancy).
    pub red_lean: bool,
}
