//! Typed ids of what the control plane registers with the core: transports (one per peer
//! connection), tracks and subscriptions. The control plane chooses the numbers; the types only
//! keep one kind of id from being passed where another is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// A peer connection: where the router's output datagrams go.
    TransportId
);
id_type!(
    /// A published track (one incoming media stream, with its RTX stream if any).
    TrackId
);
id_type!(
    /// One subscriber's (or recording sink's) copy of a track.
    SubscriptionId
);
