//! Bid history from the log: every bid an auction accepted, newest first,
//! with what the public may see. Bid ids are derived from the auction id
//! and the engine sequence of the event that accepted the bid (a UUIDv5),
//! so they are stable without a table of their own.

use std::collections::{HashMap, HashSet};

use auction_engine::{AuctionStatus, AuctionView, Event, EventKind, FormatView, UserId};
use auction_proto::v1 as pb;
use uuid::Uuid;

use crate::convert;

/// The id of the bid accepted by engine event `seq` of `auction_id`.
pub fn bid_id(auction_id: Uuid, seq: u64) -> Uuid {
    Uuid::new_v5(&auction_id, &seq.to_be_bytes())
}

/// The bidder of the bid with id `bid`, if the events hold it.
pub fn bidder_of(auction_id: Uuid, events: &[Event], bid: Uuid) -> Option<UserId> {
    events
        .iter()
        .find(|event| bid_id(auction_id, event.seq) == bid)
        .and_then(|event| match event.kind {
            EventKind::BidAccepted { bidder, .. }
            | EventKind::SealedBidPlaced { bidder, .. }
            | EventKind::AbsenteeBidPlaced { bidder, .. } => Some(bidder),
            EventKind::UnitsSold { buyer, .. } => Some(buyer),
            _ => None,
        })
}

/// Every bid of the auction, newest first. `viewer` sees the maximums
/// behind their own bids; sealed amounts show only after the close (the
/// caller refuses sealed histories before it).
pub fn bids(
    auction_id: Uuid,
    events: &[Event],
    view: &AuctionView,
    viewer: Option<UserId>,
    include_removed: bool,
) -> Vec<pb::Bid> {
    let finished = view.status.is_finished();
    let (leader, winner) = match &view.format {
        FormatView::English { leader, winner, .. } => (*leader, *winner),
        FormatView::Sealed { winner, .. } => (None, *winner),
        FormatView::Live { lots, .. } => lots
            .first()
            .map_or((None, None), |lot| (lot.leader, lot.winner)),
        FormatView::Dutch { .. } => (None, None),
    };
    // A live lot's price now: what a leading absentee bid stands at.
    let lot_price = match &view.format {
        FormatView::Live { lots, .. } => lots.first().and_then(|lot| lot.price),
        FormatView::English { .. } | FormatView::Dutch { .. } | FormatView::Sealed { .. } => None,
    };
    // Absentee bids on a lot not yet opened are secret: each shows only to
    // its own bidder.
    let lot_pending = match &view.format {
        FormatView::Live { lots, .. } => lots
            .first()
            .is_some_and(|lot| lot.status == auction_engine::LotStatus::Pending),
        FormatView::English { .. } | FormatView::Dutch { .. } | FormatView::Sealed { .. } => false,
    };
    // Bidders whose bids stopped counting, and how.
    let mut retracted: HashSet<UserId> = HashSet::new();
    let mut withdrawn: HashSet<UserId> = HashSet::new();
    let mut expired: HashSet<UserId> = HashSet::new();
    for event in events {
        match event.kind {
            EventKind::BidRetracted { bidder, .. } => {
                retracted.insert(bidder);
            }
            EventKind::SealedBidWithdrawn { bidder, .. } => {
                withdrawn.insert(bidder);
            }
            EventKind::SealedBidExpired { bidder } => {
                expired.insert(bidder);
            }
            _ => {}
        }
    }
    // The newest bid of each bidder is the one that carries their status.
    let mut newest: HashMap<UserId, u64> = HashMap::new();
    // A new absentee bid replaces the bidder's earlier one on the lot.
    let mut newest_absentee: HashMap<UserId, u64> = HashMap::new();
    for event in events {
        match event.kind {
            EventKind::BidAccepted { bidder, .. } | EventKind::SealedBidPlaced { bidder, .. } => {
                newest.insert(bidder, event.seq);
            }
            EventKind::AbsenteeBidPlaced { bidder, .. } => {
                newest.insert(bidder, event.seq);
                newest_absentee.insert(bidder, event.seq);
            }
            _ => {}
        }
    }
    let mut bids = Vec::new();
    for event in events.iter().rev() {
        let (bidder, amount, max_amount, kind, quantity) = match event.kind {
            EventKind::BidAccepted {
                bidder,
                bid_kind,
                max_amount,
                price,
                leader: leader_after,
                ..
            } => {
                // eBay's history: the leader's bid shows at the price it
                // stands at; a beaten bid shows the amount it reached.
                let visible = if leader_after == bidder {
                    price
                } else {
                    max_amount
                };
                let kind = match bid_kind {
                    auction_engine::BidKind::Plain => pb::BidKind::Manual,
                    auction_engine::BidKind::Maximum => pb::BidKind::Proxy,
                    auction_engine::BidKind::Absentee => pb::BidKind::Absentee,
                };
                (bidder, visible, Some(max_amount), kind, 1)
            }
            EventKind::SealedBidPlaced { bidder, amount, .. } => {
                (bidder, amount, None, pb::BidKind::Sealed, 1)
            }
            EventKind::AbsenteeBidPlaced {
                bidder, max_amount, ..
            } => {
                if newest_absentee.get(&bidder) != Some(&event.seq) {
                    continue;
                }
                // Like a proxy maximum: a leading one shows at the price it
                // stands at, a beaten one at the amount it reached (never
                // above the price). Capped by the price even when the
                // leader bid again since: the maximum stays secret.
                let visible = match lot_price {
                    Some(price) if price.amount < max_amount.amount => price,
                    Some(_) | None => max_amount,
                };
                (bidder, visible, Some(max_amount), pb::BidKind::Absentee, 1)
            }
            EventKind::UnitsSold {
                buyer,
                quantity,
                unit_price,
                ..
            } => (buyer, unit_price, None, pb::BidKind::DutchAccept, quantity),
            _ => continue,
        };
        let counted = newest.get(&bidder) == Some(&event.seq);
        let status = if retracted.contains(&bidder) {
            pb::BidStatus::Retracted
        } else if kind == pb::BidKind::Sealed && withdrawn.contains(&bidder) && counted {
            pb::BidStatus::Withdrawn
        } else if kind == pb::BidKind::Sealed && expired.contains(&bidder) && counted {
            pb::BidStatus::Expired
        } else if kind == pb::BidKind::DutchAccept {
            pb::BidStatus::Won
        } else if view.status == AuctionStatus::Cancelled {
            pb::BidStatus::Cancelled
        } else if finished {
            if counted && winner == Some(bidder) {
                pb::BidStatus::Won
            } else {
                pb::BidStatus::Lost
            }
        } else if kind == pb::BidKind::Sealed {
            pb::BidStatus::Sealed
        } else if lot_pending {
            pb::BidStatus::Pending
        } else if counted && leader == Some(bidder) {
            pb::BidStatus::Winning
        } else {
            pb::BidStatus::Outbid
        };
        let removed = matches!(
            status,
            pb::BidStatus::Retracted | pb::BidStatus::Withdrawn | pb::BidStatus::Expired
        );
        if removed && !include_removed {
            continue;
        }
        let own = viewer == Some(bidder);
        if lot_pending && !own {
            continue;
        }
        bids.push(pb::Bid {
            bid_id: bid_id(auction_id, event.seq).to_string(),
            auction_id: auction_id.to_string(),
            bidder: Some(convert::bidder(bidder)),
            amount: Some(convert::money_to_proto(amount)),
            max_amount: if own {
                max_amount.map(convert::money_to_proto)
            } else {
                None
            },
            kind: kind as i32,
            status: status as i32,
            quantity,
            place_time: Some(convert::timestamp(event.at)),
            sequence: convert::wire_sequence(event.seq),
            ..pb::Bid::default()
        });
    }
    bids
}
