//! Client mode for the load generator: after aiortc has done ICE and DTLS for a simulated
//! participant, a [`pump::Pump`] owns that participant's UDP socket and SRTP keys, sends synthetic
//! VP8 and Opus RTP at realistic sizes and rates, and measures what comes back (loss from sequence
//! numbers, end-to-end latency from a send stamp in each payload, jitter, RTCP feedback).
//!
//! This is deliberately separate from the server's router and I/O code: it shares only
//! [`crate::srtp::SrtpContext`]. One worker thread serves every socket of a generator process, so
//! the generator costs far less CPU than the server it loads.

pub mod batch_io;
pub mod pump;
pub mod py;
pub mod rtcp_count;
pub mod stats;
pub mod synth;
