//! Who gets what: pure functions from bus events (already decoded) and what
//! the service knows of an auction (its bidders and watchers) to the
//! notifications to produce, with their texts and a dedupe key per
//! recipient. No I/O, no clock: the consumer and the ending-soon scheduler
//! feed them and store the result.

use auction_proto::v1::{
    BusAuctionEvent, BusAuctionUnsoldReason, BusCatalogEvent, BusOrderEvent, Money,
    NotificationChannel, NotificationType, bus_auction_event, bus_catalog_event, bus_order_event,
};
use prost_types::Timestamp;

/// Channel bits as stored in `preferences.channels`.
pub const IN_APP: i64 = 1;
/// E-mail.
pub const EMAIL: i64 = 2;
/// Webhooks.
pub const WEBHOOK: i64 = 4;

/// Every notification type, in contract order.
pub const ALL_TYPES: [NotificationType; 16] = [
    NotificationType::Outbid,
    NotificationType::EndingSoon,
    NotificationType::Extended,
    NotificationType::Won,
    NotificationType::Lost,
    NotificationType::ReserveNotMet,
    NotificationType::NewAuctionMatchingInterests,
    NotificationType::LiveSessionStarting,
    NotificationType::OrderCreated,
    NotificationType::PaymentDue,
    NotificationType::Paid,
    NotificationType::Shipped,
    NotificationType::Released,
    NotificationType::DisputeUpdated,
    NotificationType::SecondChanceOffer,
    NotificationType::Refunded,
];

/// The channels a type has when the user chose none (notification.proto).
pub fn default_channels(notification_type: NotificationType) -> i64 {
    match notification_type {
        NotificationType::EndingSoon
        | NotificationType::Extended
        | NotificationType::Lost
        | NotificationType::NewAuctionMatchingInterests => IN_APP,
        NotificationType::Outbid
        | NotificationType::Won
        | NotificationType::ReserveNotMet
        | NotificationType::LiveSessionStarting
        | NotificationType::OrderCreated
        | NotificationType::PaymentDue
        | NotificationType::Paid
        | NotificationType::Shipped
        | NotificationType::Released
        | NotificationType::DisputeUpdated
        | NotificationType::SecondChanceOffer
        | NotificationType::Refunded => IN_APP | EMAIL,
        NotificationType::Unspecified => 0,
    }
}

/// Whether IN_APP is always on for the type (order and payment types).
pub fn in_app_forced(notification_type: NotificationType) -> bool {
    matches!(
        notification_type,
        NotificationType::OrderCreated
            | NotificationType::PaymentDue
            | NotificationType::Paid
            | NotificationType::Shipped
            | NotificationType::Released
            | NotificationType::DisputeUpdated
            | NotificationType::SecondChanceOffer
            | NotificationType::Refunded
    )
}

/// The effective channels from a stored choice (or the default).
pub fn effective_channels(notification_type: NotificationType, stored: Option<i64>) -> i64 {
    let channels = stored.unwrap_or_else(|| default_channels(notification_type));
    if in_app_forced(notification_type) {
        channels | IN_APP
    } else {
        channels
    }
}

/// Channel bits to the contract's enum values.
pub fn channels_to_proto(channels: i64) -> Vec<i32> {
    [
        (IN_APP, NotificationChannel::InApp),
        (EMAIL, NotificationChannel::Email),
        (WEBHOOK, NotificationChannel::Webhook),
    ]
    .into_iter()
    .filter(|(bit, _)| channels & bit != 0)
    .map(|(_, channel)| channel as i32)
    .collect()
}

/// The bit of a channel enum value; `None` for UNSPECIFIED or unknown.
pub fn channel_bit(value: i32) -> Option<i64> {
    match NotificationChannel::try_from(value).ok()? {
        NotificationChannel::InApp => Some(IN_APP),
        NotificationChannel::Email => Some(EMAIL),
        NotificationChannel::Webhook => Some(WEBHOOK),
        NotificationChannel::Unspecified => None,
    }
}

/// One notification to produce for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Recipient.
    pub user_id: String,
    /// Type.
    pub notification_type: NotificationType,
    /// Identity of the fact notified: a second event about the same fact
    /// (a re-published event with another id) produces nothing.
    pub dedupe_key: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Deep link.
    pub action_path: String,
    /// Auction concerned.
    pub auction_id: String,
    /// Order concerned.
    pub order_id: String,
    /// Dispute concerned.
    pub dispute_id: String,
    /// Live session concerned.
    pub live_session_id: String,
    /// Offer concerned.
    pub offer_id: String,
    /// The type's amount.
    pub amount: Option<Money>,
    /// The type's deadline.
    pub deadline_time: Option<Timestamp>,
}

impl Planned {
    fn new(user_id: &str, notification_type: NotificationType, dedupe_key: String) -> Self {
        Self {
            user_id: user_id.to_owned(),
            notification_type,
            dedupe_key,
            title: String::new(),
            body: String::new(),
            action_path: String::new(),
            auction_id: String::new(),
            order_id: String::new(),
            dispute_id: String::new(),
            live_session_id: String::new(),
            offer_id: String::new(),
            amount: None,
            deadline_time: None,
        }
    }

    fn auction(mut self, auction_id: &str) -> Self {
        self.auction_id = auction_id.to_owned();
        self.action_path = format!("/auctions/{auction_id}");
        self
    }

    fn order(mut self, order_id: &str, auction_id: &str) -> Self {
        self.order_id = order_id.to_owned();
        self.auction_id = auction_id.to_owned();
        self.action_path = format!("/orders/{order_id}");
        self
    }

    fn text(mut self, title: String, body: String) -> Self {
        self.title = clip(title, 120);
        self.body = clip(body, 1_000);
        self
    }
}

fn clip(mut text: String, max_chars: usize) -> String {
    if let Some((index, _)) = text.char_indices().nth(max_chars) {
        text.truncate(index);
    }
    text
}

fn money_text(money: Option<&Money>) -> String {
    money.map_or_else(String::new, |money| {
        format!("{} {}", money.amount, money.currency)
    })
}

fn quoted(title: &str) -> String {
    if title.is_empty() {
        "an auction".to_owned()
    } else {
        format!("\u{201c}{title}\u{201d}")
    }
}

/// What the service knows of an auction when one of its events arrives.
#[derive(Debug, Clone, Default)]
pub struct AuctionAudience {
    /// Users who bid, in first-bid order.
    pub bidders: Vec<String>,
    /// Users watching it (from the catalog's watchlist events).
    pub watchers: Vec<String>,
    /// For an opened auction: users whose interests match it.
    pub interested: Vec<String>,
}

/// Whether [`plan_auction`] reads the audience of `event`. A bid, the
/// commonest event by far, notifies only the bidder it outbid, so the store
/// does not look the audience up for it.
pub fn needs_audience(event: &BusAuctionEvent) -> bool {
    !matches!(
        event.kind,
        None | Some(bus_auction_event::Kind::BidPlaced(_))
    )
}

/// The notifications an auction event produces (`audience` may be left
/// empty where [`needs_audience`] says so).
pub fn plan_auction(event: &BusAuctionEvent, audience: &AuctionAudience) -> Vec<Planned> {
    let auction_id = event.auction_id.as_str();
    let title = quoted(&event.title);
    let Some(kind) = &event.kind else {
        return Vec::new();
    };
    match kind {
        bus_auction_event::Kind::Opened(opened) => audience
            .interested
            .iter()
            .filter(|user| **user != event.seller_id)
            .map(|user| {
                let mut planned = Planned::new(
                    user,
                    NotificationType::NewAuctionMatchingInterests,
                    format!("new_auction:{auction_id}"),
                )
                .auction(auction_id)
                .text(
                    format!("New auction: {}", event.title),
                    format!(
                        "{title} matches your interests; bidding starts at {}.",
                        money_text(opened.starting_price.as_ref())
                    ),
                );
                planned.amount.clone_from(&opened.starting_price);
                planned.deadline_time = opened.start_time;
                planned
            })
            .collect(),
        bus_auction_event::Kind::BidPlaced(bid) => {
            if bid.outbid_user_id.is_empty() || bid.outbid_user_id == bid.leader_id {
                return Vec::new();
            }
            let mut planned = Planned::new(
                &bid.outbid_user_id,
                NotificationType::Outbid,
                format!("outbid:{auction_id}:{}", event.sequence),
            )
            .auction(auction_id)
            .text(
                format!("You have been outbid on {}", event.title),
                format!(
                    "Someone bid more on {title}; the price is now {}. Bid again to take the lead.",
                    money_text(bid.price.as_ref())
                ),
            );
            planned.amount.clone_from(&bid.price);
            vec![planned]
        }
        bus_auction_event::Kind::Extended(extended) => {
            let end_ms = extended
                .end_time
                .map_or(0, |time| auction_platform::bus::ms_from_timestamp(&time));
            everyone(audience)
                .into_iter()
                .map(|user| {
                    let mut planned = Planned::new(
                        &user,
                        NotificationType::Extended,
                        format!("extended:{auction_id}:{end_ms}"),
                    )
                    .auction(auction_id)
                    .text(
                        format!("{} was extended", event.title),
                        format!("A late bid extended {title}; it now ends later."),
                    );
                    planned.deadline_time = extended.end_time;
                    planned
                })
                .collect()
        }
        bus_auction_event::Kind::Sold(sold) => {
            let winners: Vec<&str> = sold
                .awards
                .iter()
                .map(|award| award.winner_id.as_str())
                .collect();
            let mut planned: Vec<Planned> = sold
                .awards
                .iter()
                .map(|award| {
                    let mut won = Planned::new(&award.winner_id, NotificationType::Won, format!("won:{auction_id}"))
                        .auction(auction_id)
                        .text(
                            format!("You won {}", event.title),
                            format!(
                                "Congratulations: you won {title} at {}. Payment instructions follow with your order.",
                                money_text(award.price.as_ref())
                            ),
                        );
                    won.amount.clone_from(&award.price);
                    won
                })
                .collect();
            planned.extend(
                audience
                    .bidders
                    .iter()
                    .filter(|bidder| !winners.contains(&bidder.as_str()))
                    .map(|bidder| {
                        let mut lost = Planned::new(
                            bidder,
                            NotificationType::Lost,
                            format!("lost:{auction_id}"),
                        )
                        .auction(auction_id)
                        .text(
                            format!("{} has ended", event.title),
                            format!(
                                "{title} sold for {}; you did not win this time.",
                                money_text(sold.final_price.as_ref())
                            ),
                        );
                        lost.amount.clone_from(&sold.final_price);
                        lost
                    }),
            );
            planned
        }
        bus_auction_event::Kind::Unsold(unsold) => {
            let reserve_not_met = unsold.reason == BusAuctionUnsoldReason::ReserveNotMet as i32;
            let mut planned = Vec::new();
            if reserve_not_met {
                let mut recipients = vec![event.seller_id.clone()];
                if !unsold.highest_bidder_id.is_empty() {
                    recipients.push(unsold.highest_bidder_id.clone());
                }
                planned.extend(
                    recipients
                        .iter()
                        .filter(|user| !user.is_empty())
                        .map(|user| {
                            Planned::new(
                                user,
                                NotificationType::ReserveNotMet,
                                format!("reserve_not_met:{auction_id}"),
                            )
                            .auction(auction_id)
                            .text(
                                format!("Reserve not met: {}", event.title),
                                format!("{title} ended below its reserve price and did not sell."),
                            )
                        }),
                );
            }
            planned.extend(
                audience
                    .bidders
                    .iter()
                    .filter(|bidder| !(reserve_not_met && **bidder == unsold.highest_bidder_id))
                    .map(|bidder| {
                        Planned::new(bidder, NotificationType::Lost, format!("lost:{auction_id}"))
                            .auction(auction_id)
                            .text(
                                format!("{} has ended", event.title),
                                format!("{title} ended without a sale."),
                            )
                    }),
            );
            planned
        }
        // No notification type for a cancellation in the contract (yet):
        // the consumer only stops tracking the auction.
        bus_auction_event::Kind::Cancelled(_) => Vec::new(),
    }
}

/// Bidders and watchers, each once, bidders first.
pub fn everyone(audience: &AuctionAudience) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    for user in audience.bidders.iter().chain(&audience.watchers) {
        if !users.contains(user) {
            users.push(user.clone());
        }
    }
    users
}

/// The dedupe key of ENDING_SOON is this prefix and the auction id (the
/// ending-soon scan looks for it in SQL).
pub const ENDING_SOON_KEY_PREFIX: &str = "ending_soon:";

/// ENDING_SOON for one participant of an auction ending at `end_time`.
pub fn plan_ending_soon(
    user_id: &str,
    auction_id: &str,
    title: &str,
    end_time: Timestamp,
    price: Option<Money>,
) -> Planned {
    let mut planned = Planned::new(
        user_id,
        NotificationType::EndingSoon,
        format!("{ENDING_SOON_KEY_PREFIX}{auction_id}"),
    )
    .auction(auction_id)
    .text(
        format!("Ending soon: {title}"),
        format!(
            "{} ends soon. Current price: {}.",
            quoted(title),
            money_text(price.as_ref())
        ),
    );
    planned.amount = price;
    planned.deadline_time = Some(end_time);
    planned
}

/// The notifications an order event produces.
pub fn plan_order(event: &BusOrderEvent, event_id: &str) -> Vec<Planned> {
    let order_id = event.order_id.as_str();
    let auction_id = event.auction_id.as_str();
    let title = quoted(&event.title);
    let both = [event.buyer_id.as_str(), event.seller_id.as_str()];
    let make = |user: &str,
                notification_type: NotificationType,
                key: String,
                heading: String,
                body: String| {
        Planned::new(user, notification_type, key)
            .order(order_id, auction_id)
            .text(heading, body)
    };
    let Some(kind) = &event.kind else {
        return Vec::new();
    };
    let mut planned = Vec::new();
    match kind {
        bus_order_event::Kind::Created(created) => {
            for user in both {
                let mut one = make(
                    user,
                    NotificationType::OrderCreated,
                    format!("order_created:{order_id}"),
                    format!("Order created for {}", event.title),
                    format!(
                        "An order for {title} was created; total due {}.",
                        money_text(created.total_due.as_ref())
                    ),
                );
                one.amount.clone_from(&created.total_due);
                one.deadline_time = created.payment_due_time;
                planned.push(one);
            }
        }
        bus_order_event::Kind::PaymentDue(due) => {
            let mut one = make(
                &event.buyer_id,
                NotificationType::PaymentDue,
                format!("payment_due:{order_id}"),
                format!("Payment due for {}", event.title),
                format!(
                    "Please pay {} for {title} before the deadline.",
                    money_text(due.total_due.as_ref())
                ),
            );
            one.amount.clone_from(&due.total_due);
            one.deadline_time = due.payment_due_time;
            planned.push(one);
        }
        bus_order_event::Kind::Paid(paid) => {
            for user in both {
                let mut one = make(
                    user,
                    NotificationType::Paid,
                    format!("paid:{order_id}"),
                    format!("Payment received for {}", event.title),
                    format!(
                        "{} for {title} is held in escrow.",
                        money_text(paid.total_paid.as_ref())
                    ),
                );
                one.amount.clone_from(&paid.total_paid);
                planned.push(one);
            }
        }
        bus_order_event::Kind::Shipped(shipped) => {
            let mut one = make(
                &event.buyer_id,
                NotificationType::Shipped,
                format!("shipped:{order_id}"),
                format!("{} has shipped", event.title),
                format!("The seller shipped {title}. Confirm receipt when it arrives."),
            );
            one.deadline_time = shipped.auto_release_time;
            planned.push(one);
        }
        bus_order_event::Kind::Released(released) => {
            let mut buyer = make(
                &event.buyer_id,
                NotificationType::Released,
                format!("released:{order_id}"),
                format!("Order complete: {}", event.title),
                format!("Escrow for {title} was released to the seller."),
            );
            buyer.amount.clone_from(&released.total_paid);
            let mut seller = make(
                &event.seller_id,
                NotificationType::Released,
                format!("released:{order_id}"),
                format!("Funds released for {}", event.title),
                format!(
                    "{} for {title} is on its way to you.",
                    money_text(released.seller_proceeds.as_ref())
                ),
            );
            seller.amount.clone_from(&released.seller_proceeds);
            planned.extend([buyer, seller]);
        }
        bus_order_event::Kind::Refunded(refunded) => {
            for user in both {
                let mut one = make(
                    user,
                    NotificationType::Refunded,
                    format!("refunded:{order_id}:{event_id}"),
                    format!("Refund for {}", event.title),
                    format!(
                        "{} of {title} was refunded.",
                        money_text(refunded.amount.as_ref())
                    ),
                );
                one.amount.clone_from(&refunded.amount);
                planned.push(one);
            }
        }
        bus_order_event::Kind::DisputeUpdated(dispute) => {
            for user in both {
                let mut one = make(
                    user,
                    NotificationType::DisputeUpdated,
                    format!("dispute:{}:{event_id}", dispute.dispute_id),
                    format!("Dispute update for {}", event.title),
                    format!("The dispute about {title} changed: {}.", dispute.change),
                );
                one.dispute_id.clone_from(&dispute.dispute_id);
                one.deadline_time = dispute.respond_by_time;
                planned.push(one);
            }
        }
        bus_order_event::Kind::SecondChanceOffered(offer) => {
            let mut one = Planned::new(
                &offer.recipient_id,
                NotificationType::SecondChanceOffer,
                format!("second_chance:{}", offer.offer_id),
            )
            .auction(auction_id)
            .text(
                format!("Second chance: {}", event.title),
                format!(
                    "You may buy {title} at {}.",
                    money_text(offer.price.as_ref())
                ),
            );
            one.offer_id.clone_from(&offer.offer_id);
            one.amount.clone_from(&offer.price);
            one.deadline_time = offer.expire_time;
            planned.push(one);
        }
    }
    planned.retain(|one| !one.user_id.is_empty());
    planned
}

/// The notifications a catalog event produces (watchlist changes produce
/// none: they change who hears of an auction).
pub fn plan_catalog(event: &BusCatalogEvent) -> Vec<Planned> {
    match &event.kind {
        Some(bus_catalog_event::Kind::LiveSessionStarting(session)) => session
            .recipient_ids
            .iter()
            .map(|user| {
                let mut planned = Planned::new(
                    user,
                    NotificationType::LiveSessionStarting,
                    format!("live_session:{}", session.live_session_id),
                )
                .text(
                    format!("Starting soon: {}", session.title),
                    format!("The live session {} starts soon.", quoted(&session.title)),
                );
                planned.live_session_id.clone_from(&session.live_session_id);
                planned.action_path = format!("/live/{}", session.live_session_id);
                planned.deadline_time = session.start_time;
                planned
            })
            .collect(),
        Some(bus_catalog_event::Kind::WatchlistChanged(_)) | None => Vec::new(),
    }
}

/// Whether an opened auction matches a user's interests: with categories,
/// one must be on the auction's category path; with keywords, the title
/// must contain one (case-insensitive); with neither, nothing matches.
pub fn matches_interests(
    categories: &[String],
    keywords: &[String],
    category_path: &[String],
    title: &str,
) -> bool {
    if categories.is_empty() && keywords.is_empty() {
        return false;
    }
    let category_match = categories.is_empty()
        || categories
            .iter()
            .any(|category| category_path.contains(category));
    let title = title.to_lowercase();
    let keyword_match = keywords.is_empty()
        || keywords
            .iter()
            .any(|keyword| title.contains(&keyword.to_lowercase()));
    category_match && keyword_match
}

#[cfg(test)]
mod tests {
    use auction_proto::v1::{
        BusAuctionAward, BusAuctionBidPlaced, BusAuctionSold, BusAuctionUnsold,
    };

    use super::*;

    fn usd(amount: &str) -> Option<Money> {
        Some(Money {
            currency: "USD".to_owned(),
            amount: amount.to_owned(),
        })
    }

    fn event(kind: bus_auction_event::Kind) -> BusAuctionEvent {
        BusAuctionEvent {
            auction_id: "a1".to_owned(),
            sequence: 4,
            seller_id: "seller".to_owned(),
            title: "Lamp".to_owned(),
            kind: Some(kind),
            ..BusAuctionEvent::default()
        }
    }

    // Proves an outbidding bid notifies exactly the outbid user, with the new
    // price, and a bid without a previous leader notifies nobody.
    #[test]
    fn outbid_goes_to_the_previous_leader() {
        let bid = BusAuctionBidPlaced {
            bidder_id: "bob".to_owned(),
            leader_id: "bob".to_owned(),
            outbid_user_id: "alice".to_owned(),
            price: usd("12.00"),
            ..BusAuctionBidPlaced::default()
        };
        let planned = plan_auction(
            &event(bus_auction_event::Kind::BidPlaced(bid.clone())),
            &AuctionAudience::default(),
        );
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].user_id, "alice");
        assert_eq!(planned[0].notification_type, NotificationType::Outbid);
        assert_eq!(planned[0].amount, usd("12.00"));
        assert_eq!(planned[0].dedupe_key, "outbid:a1:4");
        // The store leaves the audience of a bid empty: it must not matter.
        let event_of_bid = event(bus_auction_event::Kind::BidPlaced(bid.clone()));
        assert!(!needs_audience(&event_of_bid));
        let audience = AuctionAudience {
            bidders: vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()],
            watchers: vec!["dave".to_owned()],
            interested: vec!["erin".to_owned()],
        };
        assert_eq!(plan_auction(&event_of_bid, &audience), planned);
        let first = BusAuctionBidPlaced {
            outbid_user_id: String::new(),
            ..bid
        };
        assert!(
            plan_auction(
                &event(bus_auction_event::Kind::BidPlaced(first)),
                &AuctionAudience::default()
            )
            .is_empty()
        );
    }

    // Proves an absentee bid on a pending live lot, which the bidding service
    // publishes without a price, a leader or an outbid user, notifies nobody.
    #[test]
    fn an_absentee_bid_outbids_nobody() {
        let absentee = BusAuctionBidPlaced {
            bidder_id: "bob".to_owned(),
            bid_amount: usd("30.00"),
            ..BusAuctionBidPlaced::default()
        };
        let audience = AuctionAudience {
            bidders: vec!["alice".to_owned(), "bob".to_owned()],
            ..AuctionAudience::default()
        };
        assert!(
            plan_auction(
                &event(bus_auction_event::Kind::BidPlaced(absentee)),
                &audience
            )
            .is_empty()
        );
    }

    // Proves a sale tells the winner WON and every other bidder LOST.
    #[test]
    fn sold_tells_winner_and_losers() {
        let sold = BusAuctionSold {
            awards: vec![BusAuctionAward {
                winner_id: "bob".to_owned(),
                price: usd("20.00"),
                quantity: 1,
            }],
            final_price: usd("20.00"),
        };
        let audience = AuctionAudience {
            bidders: vec!["alice".to_owned(), "bob".to_owned()],
            ..AuctionAudience::default()
        };
        let planned = plan_auction(&event(bus_auction_event::Kind::Sold(sold)), &audience);
        let summary: Vec<(&str, NotificationType)> = planned
            .iter()
            .map(|one| (one.user_id.as_str(), one.notification_type))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bob", NotificationType::Won),
                ("alice", NotificationType::Lost)
            ]
        );
    }

    // Proves reserve-not-met reaches the seller and the highest bidder, and the
    // other bidders learn they lost.
    #[test]
    fn reserve_not_met_reaches_seller_and_highest_bidder() {
        let unsold = BusAuctionUnsold {
            reason: BusAuctionUnsoldReason::ReserveNotMet as i32,
            highest_bidder_id: "bob".to_owned(),
        };
        let audience = AuctionAudience {
            bidders: vec!["alice".to_owned(), "bob".to_owned()],
            ..AuctionAudience::default()
        };
        let planned = plan_auction(&event(bus_auction_event::Kind::Unsold(unsold)), &audience);
        let summary: Vec<(&str, NotificationType)> = planned
            .iter()
            .map(|one| (one.user_id.as_str(), one.notification_type))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("seller", NotificationType::ReserveNotMet),
                ("bob", NotificationType::ReserveNotMet),
                ("alice", NotificationType::Lost)
            ]
        );
    }

    // Proves interest matching by category path and by keyword.
    #[test]
    fn interests_match_by_category_and_keyword() {
        let path = vec!["home".to_owned(), "lamps".to_owned()];
        assert!(matches_interests(
            &["home".to_owned()],
            &[],
            &path,
            "Brass lamp"
        ));
        assert!(!matches_interests(
            &["garden".to_owned()],
            &[],
            &path,
            "Brass lamp"
        ));
        assert!(matches_interests(
            &["home".to_owned()],
            &["BRASS".to_owned()],
            &path,
            "Brass lamp"
        ));
        assert!(!matches_interests(
            &["home".to_owned()],
            &["copper".to_owned()],
            &path,
            "Brass lamp"
        ));
        assert!(matches_interests(
            &[],
            &["lamp".to_owned()],
            &path,
            "Brass lamp"
        ));
        assert!(!matches_interests(&[], &[], &path, "Brass lamp"));
    }

    // Proves the order and payment types always keep IN_APP.
    #[test]
    fn in_app_is_forced_for_order_types() {
        assert_eq!(
            effective_channels(NotificationType::Paid, Some(EMAIL)),
            EMAIL | IN_APP
        );
        assert_eq!(
            effective_channels(NotificationType::Outbid, Some(EMAIL)),
            EMAIL
        );
        assert_eq!(
            effective_channels(NotificationType::Outbid, None),
            IN_APP | EMAIL
        );
    }
}
