//! The user service's events: `auction.v1.BusUserEvent` on topic `user`,
//! keyed by user id. They are staged in the outbox of the transaction that
//! changes the account (see `replay::Attempt::tx`), so an event exists if
//! and only if its change committed, and the relay publishes it after.
//!
//! Consumers: the catalog (interests, for recommendations) and the
//! notification service (interests, for "new auction matching your
//! interests"; contact details, for e-mail greetings and addresses).

use auction_platform::bus::{Envelope, TOPIC_USER, timestamp_from_ms};
use auction_proto::v1::{
    BusUserContactChanged, BusUserEvent, BusUserInterestsChanged, bus_user_event,
};
use uuid::Uuid;

/// The producer named in the envelopes.
const PRODUCER: &str = "user";

fn envelope(user_id: Uuid, now_ms: i64, kind: bus_user_event::Kind) -> Envelope {
    Envelope::new(
        PRODUCER,
        TOPIC_USER,
        user_id.to_string(),
        now_ms,
        &BusUserEvent {
            user_id: user_id.to_string(),
            event_time: Some(timestamp_from_ms(now_ms)),
            kind: Some(kind),
        },
    )
}

/// The account's contact details changed. The contract carries only a
/// VERIFIED e-mail address, and this service does not verify addresses
/// yet (`email_verified` is always false), so the address stays empty and
/// no e-mail is sent to an address nobody proved they own.
pub fn contact_changed(user_id: Uuid, display_name: &str, now_ms: i64) -> Envelope {
    envelope(
        user_id,
        now_ms,
        bus_user_event::Kind::ContactChanged(BusUserContactChanged {
            email: String::new(),
            display_name: display_name.to_owned(),
        }),
    )
}

/// The account's interest categories are now `category_ids` (the whole
/// list, so a consumer that missed an earlier change still ends right).
pub fn interests_changed(user_id: Uuid, category_ids: &[String], now_ms: i64) -> Envelope {
    envelope(
        user_id,
        now_ms,
        bus_user_event::Kind::InterestsChanged(BusUserInterestsChanged {
            category_ids: category_ids.to_vec(),
        }),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use auction_proto::v1::BusUserEvent;

    use super::*;

    // Proves the envelopes name the topic, the user as key, and decode to
    // the contract's message.
    #[test]
    fn envelopes_decode() {
        let user_id = Uuid::now_v7();
        let envelope = interests_changed(user_id, &["c1".to_owned()], 1_000);
        assert_eq!(envelope.topic, TOPIC_USER);
        assert_eq!(envelope.key, user_id.to_string());
        let event: BusUserEvent = envelope.decode().unwrap();
        assert_eq!(event.user_id, user_id.to_string());
        assert_eq!(
            event.kind,
            Some(bus_user_event::Kind::InterestsChanged(
                BusUserInterestsChanged {
                    category_ids: vec!["c1".to_owned()],
                }
            ))
        );
        let contact: BusUserEvent = contact_changed(user_id, "Ann", 1_000).decode().unwrap();
        assert!(matches!(
            contact.kind,
            Some(bus_user_event::Kind::ContactChanged(BusUserContactChanged { ref email, ref display_name }))
                if email.is_empty() && display_name == "Ann"
        ));
    }
}
