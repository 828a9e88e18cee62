//! Reusable output arena: datagrams to send are appended to one buffer, so routing a packet to many
//! subscribers allocates nothing once the buffers have grown to their working size.

use std::ops::Range;

use crate::ids::TransportId;

/// A batch of datagrams, each addressed to a transport.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    items: Vec<(TransportId, Range<usize>)>,
}

impl Output {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            items: Vec::with_capacity(64),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends one datagram for `transport`, written by `write` into the shared buffer.
    pub fn push_with(&mut self, transport: TransportId, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(&mut self.buf);
        let end = self.buf.len();
        if end > start {
            self.items.push((transport, start..end));
        }
    }

    pub fn get(&self, i: usize) -> (TransportId, &[u8]) {
        let (t, r) = &self.items[i];
        (*t, &self.buf[r.clone()])
    }

    pub fn iter(&self) -> impl Iterator<Item = (TransportId, &[u8])> + '_ {
        self.items.iter().map(|(t, r)| (*t, &self.buf[r.clone()]))
    }
}
