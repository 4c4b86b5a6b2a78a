//! The user service's events: `auction.v1.BusUserEvent` on topic `user`,
//! keyed by user id. They are staged in the outbox of the transaction that
//! changes the account (see `replay::Attempt::tx`), so an event exists if
//! and only if its change committed, and the relay publishes it after.
//!
//! Consumers: the catalog (interests, for recommendations) and the
//! notification service (interests, for "new auction matching your
//! interests"; contact details, for e-mail greetings and addresses; the
//! verification e-mails it sends as they are asked for).

use auction_platform::bus::{Envelope, TOPIC_USER, timestamp_from_ms};
use auction_proto::v1::{
    BusUserContactChanged, BusUserEmailVerificationRequested, BusUserEvent,
    BusUserInterestsChanged, bus_user_event,
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
/// VERIFIED e-mail address: `verified_email` is the account's address once
/// VerifyEmail proved it ([`crate::store::UserRecord::contact_email`]),
/// else empty, so no e-mail goes to an address nobody proved they own.
pub fn contact_changed(
    user_id: Uuid,
    display_name: &str,
    verified_email: &str,
    now_ms: i64,
) -> Envelope {
    envelope(
        user_id,
        now_ms,
        bus_user_event::Kind::ContactChanged(BusUserContactChanged {
            email: verified_email.to_owned(),
            display_name: display_name.to_owned(),
        }),
    )
}

/// A verification link must be mailed to `email` (not yet verified).
/// The token travels in clear on the bus (see events.proto); only its hash
/// is stored here.
pub fn email_verification_requested(
    user_id: Uuid,
    email: &str,
    display_name: &str,
    token: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Envelope {
    envelope(
        user_id,
        now_ms,
        bus_user_event::Kind::EmailVerificationRequested(BusUserEmailVerificationRequested {
            email: email.to_owned(),
            display_name: display_name.to_owned(),
            token: token.to_owned(),
            expire_time: Some(timestamp_from_ms(expires_at_ms)),
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
        let contact: BusUserEvent = contact_changed(user_id, "Ann", "", 1_000).decode().unwrap();
        assert!(matches!(
            contact.kind,
            Some(bus_user_event::Kind::ContactChanged(BusUserContactChanged { ref email, ref display_name }))
                if email.is_empty() && display_name == "Ann"
        ));
        let verified: BusUserEvent = contact_changed(user_id, "Ann", "ann@example.test", 1_000)
            .decode()
            .unwrap();
        assert!(matches!(
            verified.kind,
            Some(bus_user_event::Kind::ContactChanged(BusUserContactChanged { ref email, .. }))
                if email == "ann@example.test"
        ));
        let requested: BusUserEvent =
            email_verification_requested(user_id, "ann@example.test", "Ann", "amv_x", 9_000, 1_000)
                .decode()
                .unwrap();
        assert!(matches!(
            requested.kind,
            Some(bus_user_event::Kind::EmailVerificationRequested(BusUserEmailVerificationRequested { ref email, ref token, ref expire_time, .. }))
                if email == "ann@example.test" && token == "amv_x" && expire_time.as_ref().map(|time| time.seconds) == Some(9)
        ));
    }
}
