//! Client mode for the load generator: after aiortc has done ICE and DTLS for a simulated
//! participant, a [`pump::Pump`] owns that participant's UDP socket and SRTP keys, sends synthetic
//! VP8 and Opus RTP at realistic sizes and rates, and measures what comes back (loss from sequence
//! numbers, end-to-end latency from a send stamp in each payload, jitter, RTCP feedback).
//!
//! It shares no router code with the server: only SRTP and the RTCP walker from the core, and the
//! batched UDP I/O and clocks of the media plane. One worker thread serves every socket of a
//! generator process, so the generator costs far less CPU than the server it loads.

pub mod impair;
pub mod pump;
pub mod receiver;
pub mod rtcp_count;
pub mod stats;
pub mod synth;
