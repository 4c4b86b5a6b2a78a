//! The bidding service's events on the event bus (topic `auction`): what
//! other services (notifications, payment, catalog) learn of an auction,
//! mapped from the engine's committed events. Staged in the outbox in the
//! same transaction as the log append, so a deposed leader's events are
//! never published and a crash loses none.

use auction_engine::{AuctionView, Event, EventKind, FormatView, UnsoldReason, UserId};
use auction_platform::bus::{Envelope, TOPIC_AUCTION};
use auction_proto::v1 as pb;
use uuid::Uuid;

use crate::convert;
use crate::shard::Metadata;

/// The producer name on every envelope.
pub const PRODUCER: &str = "bidding";

fn user(id: UserId) -> String {
    Uuid::from_u128(id.0).to_string()
}

fn end_time(view: &AuctionView) -> Option<prost_types::Timestamp> {
    match &view.format {
        FormatView::English { end_at, .. } | FormatView::Sealed { end_at, .. } => {
            Some(convert::timestamp(*end_at))
        }
        FormatView::Dutch { .. } | FormatView::Live { .. } => None,
    }
}

fn starting_price(view: &AuctionView) -> Option<pb::Money> {
    match &view.format {
        FormatView::English { minimum_bid, .. } | FormatView::Sealed { minimum_bid, .. } => {
            Some(convert::money_to_proto(*minimum_bid))
        }
        FormatView::Dutch { clock_price, .. } => Some(convert::money_to_proto(*clock_price)),
        FormatView::Live { .. } => None,
    }
}

fn unsold_reason(reason: UnsoldReason) -> pb::BusAuctionUnsoldReason {
    match reason {
        UnsoldReason::NoBids => pb::BusAuctionUnsoldReason::NoBids,
        UnsoldReason::ReserveNotMet => pb::BusAuctionUnsoldReason::ReserveNotMet,
        UnsoldReason::NoAccept | UnsoldReason::NothingSold => pb::BusAuctionUnsoldReason::NoAccept,
        UnsoldReason::Passed => pb::BusAuctionUnsoldReason::Passed,
    }
}

/// The bus events of one auction's committed events (`view` is the state
/// after them). Dutch sales are announced per accept (one award each); a
/// Dutch auction that sold nothing is announced unsold.
pub fn envelopes(
    auction_id: Uuid,
    events: &[Event],
    view: &AuctionView,
    metadata: &Metadata,
) -> Vec<Envelope> {
    use pb::bus_auction_event::Kind;
    let mut envelopes = Vec::new();
    for event in events {
        let kind = match event.kind {
            EventKind::Opened => Some(Kind::Opened(pb::BusAuctionOpened {
                format: convert::format_of(view) as i32,
                category_id: metadata.category_id.clone(),
                category_path_ids: metadata.category_path_ids.clone(),
                starting_price: starting_price(view),
                start_time: Some(convert::timestamp(view.start_at)),
                end_time: end_time(view),
            })),
            EventKind::BidAccepted {
                bidder,
                max_amount,
                price,
                leader,
                previous_leader,
                reserve_met,
                received_at,
                ..
            } => Some(Kind::BidPlaced(pb::BusAuctionBidPlaced {
                bidder_id: user(bidder),
                price: Some(convert::money_to_proto(price)),
                leader_id: user(leader),
                outbid_user_id: previous_leader
                    .filter(|previous| *previous != leader)
                    .map(user)
                    .unwrap_or_default(),
                reserve_met,
                end_time: end_time(view),
                receive_time: Some(convert::timestamp(received_at)),
                sealed: false,
                // Private to the bidder: for second-chance offers (payment).
                bid_amount: Some(convert::money_to_proto(max_amount)),
            })),
            // An absentee bid competes with nobody until its lot opens: no
            // price, no leader and nobody outbid (so no OUTBID notice), only
            // who bid (a participant of the lot, told of its result) and
            // their own amount.
            EventKind::AbsenteeBidPlaced {
                bidder,
                max_amount,
                received_at,
                ..
            } => Some(Kind::BidPlaced(pb::BusAuctionBidPlaced {
                bidder_id: user(bidder),
                receive_time: Some(convert::timestamp(received_at)),
                // Private to the bidder: for second-chance offers (payment).
                bid_amount: Some(convert::money_to_proto(max_amount)),
                ..pb::BusAuctionBidPlaced::default()
            })),
            EventKind::SealedBidPlaced {
                bidder,
                amount,
                received_at,
                ..
            } => Some(Kind::BidPlaced(pb::BusAuctionBidPlaced {
                bidder_id: user(bidder),
                receive_time: Some(convert::timestamp(received_at)),
                end_time: end_time(view),
                sealed: true,
                // Private to the bidder: for second-chance offers (payment).
                bid_amount: Some(convert::money_to_proto(amount)),
                ..pb::BusAuctionBidPlaced::default()
            })),
            EventKind::Extended { end_at, .. } => Some(Kind::Extended(pb::BusAuctionExtended {
                end_time: Some(convert::timestamp(end_at)),
            })),
            // A live lot's hammer is provisional: its order comes with the
            // `Sold` that finalises it.
            EventKind::Sold { winner, price, .. } => Some(Kind::Sold(pb::BusAuctionSold {
                awards: vec![pb::BusAuctionAward {
                    winner_id: user(winner),
                    price: Some(convert::money_to_proto(price)),
                    quantity: 1,
                }],
                final_price: Some(convert::money_to_proto(price)),
            })),
            EventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                ..
            } => Some(Kind::Sold(pb::BusAuctionSold {
                awards: vec![pb::BusAuctionAward {
                    winner_id: user(buyer),
                    price: Some(convert::money_to_proto(unit_price)),
                    quantity,
                }],
                final_price: Some(convert::money_to_proto(unit_price)),
            })),
            EventKind::DutchEnded { units_sold: 0, .. } => {
                Some(Kind::Unsold(pb::BusAuctionUnsold {
                    reason: pb::BusAuctionUnsoldReason::NoAccept as i32,
                    highest_bidder_id: String::new(),
                }))
            }
            EventKind::Unsold { reason } => {
                let highest = match (&view.format, reason) {
                    (
                        FormatView::English {
                            leader: Some(leader),
                            ..
                        },
                        UnsoldReason::ReserveNotMet,
                    ) => user(*leader),
                    _ => String::new(),
                };
                Some(Kind::Unsold(pb::BusAuctionUnsold {
                    reason: unsold_reason(reason) as i32,
                    highest_bidder_id: highest,
                }))
            }
            EventKind::Cancelled { .. } => Some(Kind::Cancelled(pb::BusAuctionCancelled {})),
            EventKind::DutchEnded { .. }
            | EventKind::BuyItNowWithdrawn
            | EventKind::Updated
            | EventKind::BidRetracted { .. }
            | EventKind::ClockTicked { .. }
            | EventKind::SealedBidWithdrawn { .. }
            | EventKind::SealedBidExpired { .. }
            | EventKind::LotOpened { .. }
            | EventKind::FairWarning { .. }
            | EventKind::LotReopened { .. }
            | EventKind::LotSold { .. }
            | EventKind::LotPassed { .. }
            | EventKind::BidUndone { .. }
            | EventKind::SessionEnded { .. } => None,
        };
        let Some(kind) = kind else { continue };
        let payload = pb::BusAuctionEvent {
            auction_id: auction_id.to_string(),
            sequence: event.seq,
            event_time: Some(convert::timestamp(event.at)),
            seller_id: metadata.seller_id.clone(),
            title: metadata.title.clone(),
            kind: Some(kind),
        };
        envelopes.push(Envelope::new(
            PRODUCER,
            TOPIC_AUCTION,
            auction_id.to_string(),
            event.at.unix_ms(),
            &payload,
        ));
    }
    envelopes
}
