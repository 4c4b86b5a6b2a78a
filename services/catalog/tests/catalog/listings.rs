//! Listings over gRPC: validation per format with the reason, scheduling in
//! the bidding service over gRPC exactly once, edits until the auction opens,
//! cancellation by the engine's rules.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, spawn_app, with_token};
use tonic::Code;

use crate::support::{
    bid, bidder, bidding, catalog, categories, create_item, create_listing, english, new_listing,
    reason, request_id, seller, usd, violations,
};

async fn schedules_in_bidding(backend: Backend) {
    let app = spawn_app(backend).await;
    let categories = categories(&app).await;
    // A real account: the catalog asks the user service for its handle.
    let handle = format!("alice_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let registered = app.register_and_login(&handle).await;
    let alice = crate::support::User {
        id: registered.user_id,
        token: registered.access_token,
    };
    let item = create_item(
        &app,
        &alice,
        "Leica M6",
        "Rangefinder",
        &categories["cameras"],
    )
    .await;
    let listing = create_listing(
        &app,
        &alice,
        &item.item_id,
        english("100", Some("250")),
        Some(Duration::from_secs(3_600)),
    )
    .await;
    assert_eq!(listing.status, pb::AuctionStatus::Scheduled as i32);
    assert_eq!(listing.item_id, item.item_id);
    assert_eq!(listing.currency, "USD");
    assert_eq!(listing.reserve_state, pb::ReserveState::NotMet as i32);
    assert_eq!(listing.seller_handle, handle);

    // The auction exists in bidding under the listing's id.
    let state = bidding(&app)
        .await
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: listing.listing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(state.status, pb::AuctionStatus::Scheduled as i32);
    assert_eq!(state.title, "Leica M6");

    // The reserve is shown to the seller only.
    let mut client = catalog(&app).await;
    let public = client
        .get_listing(pb::GetListingRequest {
            listing_id: listing.listing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::auction_parameters::FormatParameters::English(parameters)) = public
        .listing
        .unwrap()
        .parameters
        .unwrap()
        .format_parameters
    else {
        panic!("english parameters");
    };
    assert_eq!(parameters.reserve_price, None);
    assert_eq!(public.item.unwrap().item_id, item.item_id);
    assert_eq!(public.summary.unwrap().current_price, Some(usd("100.00")));
    let own = client
        .get_listing(with_token(
            pb::GetListingRequest {
                listing_id: listing.listing_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::auction_parameters::FormatParameters::English(parameters)) =
        own.listing.unwrap().parameters.unwrap().format_parameters
    else {
        panic!("english parameters");
    };
    assert_eq!(parameters.reserve_price, Some(usd("250")));

    // The seller's listings, anyone may list.
    let listed = client
        .list_listings(pb::ListListingsRequest {
            seller_id: alice.id.to_string(),
            ..pb::ListListingsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.listings.len(), 1);
    app.stop().await;
}

// Proves CreateListing schedules the auction in bidding over gRPC (SQLite).
#[tokio::test]
async fn create_listing_schedules_the_auction_sqlite() {
    schedules_in_bidding(Backend::Sqlite).await;
}

// Proves CreateListing schedules the auction in bidding over gRPC (PostgreSQL).
#[tokio::test]
async fn create_listing_schedules_the_auction_postgres() {
    schedules_in_bidding(Backend::Postgres).await;
}

// Proves retried and concurrent CreateListing calls with one request id
// schedule one auction and answer the same listing.
#[tokio::test]
async fn retried_create_listing_schedules_one_auction() {
    let app = spawn_app(Backend::Postgres).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Eames chair", "", &categories["furniture"]).await;
    let request = new_listing(
        &item.item_id,
        english("500", None),
        Some(Duration::from_secs(600)),
    );
    let mut first = catalog(&app).await;
    let mut second = catalog(&app).await;
    let (one, two) = tokio::join!(
        first.create_listing(with_token(request.clone(), &alice.token)),
        second.create_listing(with_token(request.clone(), &alice.token)),
    );
    // One call did the work; the other replayed it, or (if it arrived while
    // the first was in flight) resumed the same listing.
    let one = one.unwrap().into_inner().listing.unwrap();
    let two = two.unwrap().into_inner().listing.unwrap();
    assert_eq!(one.listing_id, two.listing_id);
    let again = first
        .create_listing(with_token(request.clone(), &alice.token))
        .await
        .unwrap();
    assert_eq!(
        again.metadata().get("auction-idempotent-replay").unwrap(),
        "true"
    );
    assert_eq!(
        again.into_inner().listing.unwrap().listing_id,
        one.listing_id
    );

    let auctions = bidding(&app)
        .await
        .list_auctions(pb::ListAuctionsRequest {
            statuses: vec![
                pb::AuctionStatus::Scheduled as i32,
                pb::AuctionStatus::Open as i32,
            ],
            seller_id: alice.id.to_string(),
            ..pb::ListAuctionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .auctions;
    assert_eq!(auctions.len(), 1, "{auctions:?}");
    assert_eq!(auctions[0].auction_id, one.listing_id);

    // A second listing of the same item (another request id) is refused.
    let duplicate = first
        .create_listing(with_token(
            new_listing(
                &item.item_id,
                english("500", None),
                Some(Duration::from_secs(600)),
            ),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (duplicate.code(), reason(&duplicate).as_str()),
        (Code::FailedPrecondition, "ITEM_HAS_ACTIVE_LISTING")
    );
    app.stop().await;
}

fn dutch(start: &str, floor: &str, step: &str) -> pb::AuctionParameters {
    pb::AuctionParameters {
        format: pb::AuctionFormat::Dutch as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Dutch(
            pb::DutchParameters {
                start_price: Some(usd(start)),
                price_step: Some(usd(step)),
                tick_interval: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                floor_price: Some(usd(floor)),
                quantity: 3,
                max_units_per_buyer: 0,
            },
        )),
    }
}

// Proves invalid listings are refused with INVALID_ARGUMENT, the reason and
// the field, before anything is scheduled.
#[tokio::test]
async fn invalid_listings_are_refused_with_reasons() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Coin", "", &categories["coins"]).await;
    let mut client = catalog(&app).await;
    let hour = Duration::from_secs(3_600);
    let mut end_before_start = new_listing(&item.item_id, english("10", None), Some(hour));
    end_before_start.end_time = Some(crate::support::after(Duration::from_secs(60)));
    let mut euro_reserve = english("10", None);
    if let Some(pb::auction_parameters::FormatParameters::English(english)) =
        &mut euro_reserve.format_parameters
    {
        english.reserve_price = Some(pb::Money {
            currency: "EUR".to_owned(),
            amount: "20".to_owned(),
        });
    }
    let mut zero_increment = english("10", None);
    if let Some(pb::auction_parameters::FormatParameters::English(english)) =
        &mut zero_increment.format_parameters
    {
        english.increment_tiers = vec![pb::IncrementTier {
            from_price: Some(usd("0")),
            increment: Some(usd("0")),
        }];
    }
    let live = pb::AuctionParameters {
        format: pb::AuctionFormat::Live as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::LiveLot(
            pb::LiveLotParameters {
                starting_price: Some(usd("10")),
                ..pb::LiveLotParameters::default()
            },
        )),
    };
    let cases: Vec<(pb::CreateListingRequest, &str, &str)> = vec![
        (
            new_listing(&item.item_id, english("100", Some("50")), Some(hour)),
            "PARAMETERS_INVALID",
            "parameters.english.reserve_price",
        ),
        (
            new_listing(&item.item_id, zero_increment, Some(hour)),
            "AMOUNT_INVALID",
            "parameters.english.increment_tiers[0].increment",
        ),
        (
            new_listing(&item.item_id, dutch("100", "100", "5"), Some(hour)),
            "PARAMETERS_INVALID",
            "parameters.dutch.floor_price",
        ),
        (
            new_listing(&item.item_id, dutch("100", "10", "95"), Some(hour)),
            "PARAMETERS_INVALID",
            "parameters.dutch.price_step",
        ),
        (end_before_start, "SCHEDULE_INVALID", "end_time"),
        (
            new_listing(&item.item_id, euro_reserve, Some(hour)),
            "CURRENCY_MISMATCH",
            "parameters.english.reserve_price",
        ),
        (
            new_listing(&item.item_id, english("10.001", None), Some(hour)),
            "AMOUNT_INVALID",
            "parameters.english.starting_price",
        ),
        (
            new_listing(&item.item_id, live, Some(hour)),
            "PARAMETERS_INVALID",
            "parameters.format",
        ),
    ];
    for (request, expected_reason, field) in cases {
        let status = client
            .create_listing(with_token(request, &alice.token))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{expected_reason}: {status:?}"
        );
        assert_eq!(reason(&status), expected_reason, "{status:?}");
        assert_eq!(violations(&status), [field]);
    }
    // Nothing was scheduled: the item is still free to list.
    create_listing(&app, &alice, &item.item_id, english("10", None), Some(hour)).await;
    // Someone else's item.
    let bob = seller(&app);
    let other = client
        .create_listing(with_token(
            new_listing(&item.item_id, english("10", None), Some(hour)),
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&other), "NOT_OWNER");
    app.stop().await;
}

// Proves a listing is editable while scheduled (checked by the catalog, applied
// by bidding's UpdateAuction) and not once it runs; the format cannot change.
#[tokio::test]
async fn listings_are_editable_until_they_open() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let mut client = catalog(&app).await;
    let later = create_item(&app, &alice, "Print", "", &categories["prints"]).await;
    let scheduled = create_listing(
        &app,
        &alice,
        &later.item_id,
        english("10", None),
        Some(Duration::from_secs(3_600)),
    )
    .await;
    let update = |listing_id: &str, parameters: pb::AuctionParameters, version: i64| {
        pb::UpdateListingRequest {
            request_id: request_id(),
            listing_id: listing_id.to_owned(),
            listing: Some(pb::ListingUpdate {
                parameters: Some(parameters),
                ..pb::ListingUpdate::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["parameters".to_owned()],
            }),
            expected_version: version,
        }
    };
    let format_change = client
        .update_listing(with_token(
            update(&scheduled.listing_id, dutch("100", "10", "5"), 0),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (format_change.code(), reason(&format_change).as_str()),
        (Code::InvalidArgument, "PARAMETERS_INVALID")
    );
    let bad_reserve = client
        .update_listing(with_token(
            update(&scheduled.listing_id, english("10", Some("5")), 0),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_reserve), "PARAMETERS_INVALID");
    let stale = client
        .update_listing(with_token(
            update(&scheduled.listing_id, english("20", None), 7),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (stale.code(), reason(&stale).as_str()),
        (Code::Aborted, "VERSION_CONFLICT")
    );
    // A valid edit goes to bidding's UpdateAuction and shows in both places;
    // a retry with the same request id is a replay, not a second edit.
    let edit = update(&scheduled.listing_id, english("20", None), 0);
    let edited = client
        .update_listing(with_token(edit.clone(), &alice.token))
        .await
        .unwrap_or_else(|status| panic!("valid edit: {status:?}"))
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(edited.version, scheduled.version + 1);
    let replayed = client
        .update_listing(with_token(edit, &alice.token))
        .await
        .unwrap_or_else(|status| panic!("replayed edit: {status:?}"))
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(replayed.version, edited.version);
    let in_bidding = bidding(&app)
        .await
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: scheduled.listing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(
        in_bidding.current_price.map(|price| price.amount),
        Some("20.00".to_owned()),
        "bidding's starting price follows the edit"
    );

    let now = create_item(&app, &alice, "Painting", "", &categories["paintings"]).await;
    let running = create_listing(&app, &alice, &now.item_id, english("10", None), None).await;
    let too_late = client
        .update_listing(with_token(
            update(&running.listing_id, english("20", None), 0),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (too_late.code(), reason(&too_late).as_str()),
        (Code::FailedPrecondition, "LISTING_NOT_EDITABLE")
    );
    app.stop().await;
}

// Proves cancellation follows the engine's rules through bidding: the seller
// cancels a scheduled listing, not a running one with a bid and no reserve;
// nobody else cancels; the cancellation reaches bidding.
#[tokio::test]
async fn cancel_listing_follows_the_engine_rules() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = bidder(&app);
    let mut client = catalog(&app).await;
    let cancel = |listing_id: &str| pb::CancelListingRequest {
        request_id: request_id(),
        listing_id: listing_id.to_owned(),
        reason: "Changed my mind".to_owned(),
    };

    let item = create_item(&app, &alice, "Stamp", "", &categories["stamps"]).await;
    let scheduled = create_listing(
        &app,
        &alice,
        &item.item_id,
        english("10", None),
        Some(Duration::from_secs(600)),
    )
    .await;
    let foreign = client
        .cancel_listing(with_token(cancel(&scheduled.listing_id), &bob.token))
        .await
        .unwrap_err();
    assert_eq!(
        (foreign.code(), reason(&foreign).as_str()),
        (Code::PermissionDenied, "NOT_OWNER")
    );
    let request = cancel(&scheduled.listing_id);
    let cancelled = client
        .cancel_listing(with_token(request.clone(), &alice.token))
        .await
        .unwrap()
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(cancelled.status, pb::AuctionStatus::Cancelled as i32);
    assert_eq!(cancelled.cancel_reason, "Changed my mind");
    // A retry answers the same.
    let retried = client
        .cancel_listing(with_token(request, &alice.token))
        .await
        .unwrap()
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(retried.status, pb::AuctionStatus::Cancelled as i32);
    let state = bidding(&app)
        .await
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: scheduled.listing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(state.status, pb::AuctionStatus::Cancelled as i32);

    let other = create_item(&app, &alice, "Card", "", &categories["trading-cards"]).await;
    let running = create_listing(&app, &alice, &other.item_id, english("10", None), None).await;
    bid(&app, &bob, &running.listing_id, "10").await;
    let refused = client
        .cancel_listing(with_token(cancel(&running.listing_id), &alice.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused), "RESERVE_ALREADY_MET");
    app.stop().await;
}
