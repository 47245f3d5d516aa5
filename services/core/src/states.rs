//! The states of stored records, one enum each; the migrations mirror every list in a CHECK
//! constraint (`services/store` tests that they agree).

/// Declares a state enum with its stored names: `as_str`, `parse` and `ALL`.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name stored in PostgreSQL.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses [`Self::as_str`].
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// Status of a stored message (`messages.status`). Inbound: `pending` until answered, then
    /// one final state; an outbound piece is `sent` (what the platform did next is its delivery).
    MessageStatus {
        /// Waiting for its reply.
        Pending = "pending",
        /// The reply was sent (or its outcome is unknown: see the outbox).
        Answered = "answered",
        /// No reply could be sent (the outbox row says why).
        Failed = "failed",
        /// The reply would have been empty.
        Skipped = "skipped",
        /// Over a rate limit: the sender got the slow-down reply (at most once a minute).
        RateLimited = "rate_limited",
        /// Nothing to answer (a reaction, an unsupported kind).
        Ignored = "ignored",
        /// Refused by a policy; the policy notice, when one is due, is the reply.
        Blocked = "blocked",
        /// The user's data was deleted while the message was in flight: never answered.
        Cancelled = "cancelled",
        /// Outbound: accepted by the platform's Send API.
        Sent = "sent",
    }
}

impl MessageStatus {
    /// Whether an inbound message in this status is done (nothing more will be sent for it).
    pub fn is_final(self) -> bool {
        self != MessageStatus::Pending
    }
}

states! {
    /// State of a reply in the outbox (`outbox.state`): `sending` while herd may be talking to
    /// the platform, `retrying` between tries (the last try was refused, so none is in flight),
    /// then one final state.
    OutboxState {
        /// A try may be in flight.
        Sending = "sending",
        /// The last try was refused (rate limit, outage); the next one is due.
        Retrying = "retrying",
        /// Every piece was accepted.
        Sent = "sent",
        /// Refused for good, or still refused when the retry window closed.
        Failed = "failed",
        /// Outside the platform's reply window (e.g. WhatsApp's 24 hours).
        Expired = "expired",
        /// A worker stopped while a try was in flight: the platform may or may not have it. Never
        /// sent again (at most once).
        Unknown = "unknown",
    }
}

impl OutboxState {
    /// Whether nothing more will happen to this reply.
    pub fn is_final(self) -> bool {
        !matches!(self, OutboxState::Sending | OutboxState::Retrying)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_pending_or_in_flight_states_are_open() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(*s));
        }
        for s in OutboxState::ALL {
            assert_eq!(OutboxState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(MessageStatus::ALL.iter().filter(|s| !s.is_final()).count(), 1);
        assert_eq!(
            OutboxState::ALL.iter().filter(|s| !s.is_final()).copied().collect::<Vec<_>>(),
            [OutboxState::Sending, OutboxState::Retrying]
        );
        assert_eq!(MessageStatus::parse("nope"), None);
    }
}
