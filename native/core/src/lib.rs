//! mediasrv media core: sans-IO packet logic. RTP/RTCP parsing and building, sequence-number
//! arithmetic, the retransmission cache, keyframe detection, codec matching, reception statistics,
//! the selective-forwarding router (with recording sinks), the jitter buffer and SRTP. No sockets,
//! no threads, no Python: callers feed packets and the time, and send what comes out.

pub mod bwe;
pub mod codec_match;
pub mod consent;
pub mod fasthash;
pub mod framing;
pub mod h264;
pub mod ids;
pub mod jitter;
pub mod keyframe;
pub mod nack_cache;
pub mod output;
pub mod reception;
pub mod red;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod seq;
pub mod srtp;
pub mod stun;
pub mod twcc;
pub mod vp8;
