//! Search and discovery over gRPC: full text with ranking, filters, sorts,
//! facets and cursors; bidding events moving prices and bid counts; the
//! watchlist; trending and recommended listings.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use auction_platform::bus::{self, BoxFuture, Envelope, HandleError, Handler, Subscription};
use auction_proto::v1 as pb;
use auction_testkit::{Backend, TestApp, spawn_app, with_token};
use tonic::Code;

use crate::support::{
    User, WAIT, bid, bidder, catalog, categories, create_listing, english, reason, request_id,
    seller, usd, wait_for_summary,
};

fn search(
    query: &str,
    filter: pb::SearchFilter,
    sort: pb::SearchSort,
) -> pb::SearchListingsRequest {
    pb::SearchListingsRequest {
        query: query.to_owned(),
        filter: Some(filter),
        sort: sort as i32,
        page_size: 0,
        page_token: String::new(),
        include_facets: false,
    }
}

fn titles(response: &pb::SearchListingsResponse) -> Vec<&str> {
    response
        .listings
        .iter()
        .map(|listing| listing.title.as_str())
        .collect()
}

async fn run(app: &TestApp, request: pb::SearchListingsRequest) -> pb::SearchListingsResponse {
    catalog(app)
        .await
        .search_listings(request)
        .await
        .unwrap_or_else(|status| panic!("search: {status:?}"))
        .into_inner()
}

/// Lists `title` in `category` at `price` (open now).
async fn listed(
    app: &TestApp,
    user: &User,
    title: &str,
    description: &str,
    category: &str,
    price: &str,
) -> pb::Listing {
    let mut request = crate::support::new_item(title, description, category);
    request.attributes = std::collections::HashMap::from([("lot".to_owned(), "tested".to_owned())]);
    let item = catalog(app)
        .await
        .create_item(with_token(request, &user.token))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    create_listing(app, user, &item.item_id, english(price, None), None).await
}

async fn full_text_filters_sorts_facets(backend: Backend) {
    let app = spawn_app(backend).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = seller(&app);
    let leica = listed(
        &app,
        &alice,
        "Leica M6 rangefinder",
        "Black chrome body",
        &categories["cameras"],
        "900",
    )
    .await;
    let nikon = listed(
        &app,
        &alice,
        "Nikon F3 camera body",
        "Comes with a Leica strap",
        &categories["cameras"],
        "300",
    )
    .await;
    let phone = listed(
        &app,
        &bob,
        "Leica branded phone",
        "Rare collaboration",
        &categories["phones"],
        "150",
    )
    .await;
    let coin = listed(
        &app,
        &bob,
        "1909-S VDB Lincoln cent",
        "Key date",
        &categories["coins"],
        "1200",
    )
    .await;

    // The category tree counts active listings, subcategories included.
    let tree = catalog(&app)
        .await
        .list_categories(pb::ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .categories;
    let count_of = |slug: &str| {
        tree.iter()
            .find(|category| category.slug == slug)
            .unwrap()
            .active_listing_count
    };
    assert_eq!(
        (
            count_of("electronics"),
            count_of("cameras"),
            count_of("coins"),
            count_of("art")
        ),
        (3, 2, 1, 0)
    );

    // Ranking: a title match before a description-only match.
    let found = run(
        &app,
        search(
            "leica",
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    let found_titles = titles(&found);
    assert_eq!(found_titles.len(), 3, "{found_titles:?}");
    assert_eq!(
        *found_titles.last().unwrap(),
        "Nikon F3 camera body",
        "description-only match ranks last"
    );
    assert_eq!(found.total_size_estimate, 3);

    // Stemming, phrases and exclusions.
    let stemmed = run(
        &app,
        search(
            "rangefinders",
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert_eq!(titles(&stemmed), ["Leica M6 rangefinder"]);
    let phrase = run(
        &app,
        search(
            "\"black chrome\"",
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert_eq!(titles(&phrase), ["Leica M6 rangefinder"]);
    let excluded = run(
        &app,
        search(
            "leica -phone",
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert_eq!(excluded.listings.len(), 2);
    assert!(!titles(&excluded).contains(&"Leica branded phone"));

    // Category with its subcategories, price range, seller, format, condition.
    let electronics = pb::SearchFilter {
        category_ids: vec![categories["electronics"].clone()],
        ..pb::SearchFilter::default()
    };
    let in_electronics = run(
        &app,
        search("", electronics.clone(), pb::SearchSort::PriceAsc),
    )
    .await;
    assert_eq!(
        titles(&in_electronics),
        [
            "Leica branded phone",
            "Nikon F3 camera body",
            "Leica M6 rangefinder"
        ]
    );
    let priced = run(
        &app,
        search(
            "leica",
            pb::SearchFilter {
                min_price: Some(usd("200")),
                max_price: Some(usd("1000")),
                ..electronics.clone()
            },
            pb::SearchSort::PriceDesc,
        ),
    )
    .await;
    assert_eq!(
        titles(&priced),
        ["Leica M6 rangefinder", "Nikon F3 camera body"]
    );
    // Price bounds exactly on listings' prices are inclusive.
    for (min, max, expected) in [
        ("150", "150", vec!["Leica branded phone"]),
        ("149.99", "150", vec!["Leica branded phone"]),
        ("150.01", "299.99", vec![]),
        ("199.99", "200", vec![]),
        (
            "300",
            "900",
            vec!["Leica M6 rangefinder", "Nikon F3 camera body"],
        ),
        (
            "0.01",
            "99999",
            vec![
                "Leica M6 rangefinder",
                "Nikon F3 camera body",
                "Leica branded phone",
            ],
        ),
    ] {
        let found = run(
            &app,
            search(
                "leica",
                pb::SearchFilter {
                    min_price: Some(usd(min)),
                    max_price: Some(usd(max)),
                    ..electronics.clone()
                },
                pb::SearchSort::PriceDesc,
            ),
        )
        .await;
        assert_eq!(titles(&found), expected, "{min} to {max}");
    }
    let by_seller = run(
        &app,
        search(
            "",
            pb::SearchFilter {
                seller_id: bob.id.to_string(),
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::NewlyListed,
        ),
    )
    .await;
    assert_eq!(
        titles(&by_seller),
        ["1909-S VDB Lincoln cent", "Leica branded phone"]
    );
    let dutch_only = run(
        &app,
        search(
            "",
            pb::SearchFilter {
                formats: vec![pb::AuctionFormat::Dutch as i32],
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert!(dutch_only.listings.is_empty());
    let new_only = run(
        &app,
        search(
            "",
            pb::SearchFilter {
                conditions: vec![pb::ItemCondition::New as i32],
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert!(new_only.listings.is_empty());
    let ending = run(
        &app,
        search(
            "",
            pb::SearchFilter {
                end_before_time: Some(crate::support::after(Duration::from_secs(7_200))),
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::EndingSoonest,
        ),
    )
    .await;
    assert_eq!(ending.listings.len(), 4);
    let ended_only = run(
        &app,
        search(
            "",
            pb::SearchFilter {
                statuses: vec![pb::AuctionStatus::Closed as i32],
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert!(ended_only.listings.is_empty());

    // Facets: per root category (no category filter) and, with a category
    // filter, per child; each ignores its own dimension.
    let mut with_facets = search("", pb::SearchFilter::default(), pb::SearchSort::Unspecified);
    with_facets.include_facets = true;
    let facets = run(&app, with_facets).await.facets.unwrap();
    let counts: Vec<(String, u32)> = facets
        .categories
        .iter()
        .map(|facet| (facet.name.clone(), facet.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("Electronics".to_owned(), 3),
            ("Collectibles".to_owned(), 1)
        ]
    );
    assert_eq!(
        facets.formats,
        [pb::FormatFacet {
            format: pb::AuctionFormat::English as i32,
            count: 4
        }]
    );
    let mut children = search("", electronics.clone(), pb::SearchSort::Unspecified);
    children.include_facets = true;
    let facets = run(&app, children).await.facets.unwrap();
    let counts: Vec<(String, u32)> = facets
        .categories
        .iter()
        .map(|facet| (facet.name.clone(), facet.count))
        .collect();
    assert_eq!(
        counts,
        [("Cameras".to_owned(), 2), ("Phones".to_owned(), 1)]
    );

    // Cursor pagination: every listing once, in order, then the end.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let mut page = search(
            "",
            pb::SearchFilter::default(),
            pb::SearchSort::EndingSoonest,
        );
        page.page_size = 3;
        page.page_token = token.clone();
        let response = run(&app, page).await;
        seen.extend(
            response
                .listings
                .iter()
                .map(|listing| listing.listing_id.clone()),
        );
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 4);
    for listing in [&leica, &nikon, &phone, &coin] {
        assert!(seen.contains(&listing.listing_id));
    }
    let mut relevance_page = search(
        "leica",
        pb::SearchFilter::default(),
        pb::SearchSort::Relevance,
    );
    relevance_page.page_size = 2;
    let first = run(&app, relevance_page.clone()).await;
    assert_eq!(first.listings.len(), 2);
    relevance_page.page_token = first.next_page_token.clone();
    let second = run(&app, relevance_page.clone()).await;
    assert_eq!(titles(&second), ["Nikon F3 camera body"]);
    // A token belongs to its query.
    let mut other_query = search(
        "nikon",
        pb::SearchFilter::default(),
        pb::SearchSort::Relevance,
    );
    other_query.page_token = first.next_page_token;
    let refused = catalog(&app)
        .await
        .search_listings(other_query)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::InvalidArgument, "PAGE_TOKEN_INVALID")
    );

    // Invalid searches.
    let mut client = catalog(&app).await;
    let long = client
        .search_listings(search(
            &"x".repeat(201),
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&long), "VALIDATION_FAILED");
    let inverted = client
        .search_listings(search(
            "",
            pb::SearchFilter {
                min_price: Some(usd("10")),
                max_price: Some(usd("5")),
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&inverted), "VALIDATION_FAILED");
    let mixed = client
        .search_listings(search(
            "",
            pb::SearchFilter {
                min_price: Some(usd("10")),
                max_price: Some(pb::Money {
                    currency: "EUR".to_owned(),
                    amount: "50".to_owned(),
                }),
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&mixed), "CURRENCY_MISMATCH");
    app.stop().await;
}

// Proves full text, filters, sorts, facets and cursors on SQLite (FTS5).
#[tokio::test]
async fn search_full_text_filters_sorts_facets_sqlite() {
    full_text_filters_sorts_facets(Backend::Sqlite).await;
}

// Proves full text, filters, sorts, facets and cursors on PostgreSQL (tsvector + GIN).
#[tokio::test]
async fn search_full_text_filters_sorts_facets_postgres() {
    full_text_filters_sorts_facets(Backend::Postgres).await;
}

// Proves current price and bid count in results follow bidding's events, and
// the price filter and bid-count sort see them.
#[tokio::test]
async fn search_follows_bidding_events() {
    let app = spawn_app(Backend::Postgres).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = bidder(&app);
    let carol = bidder(&app);
    let quiet = listed(&app, &alice, "Quiet lamp", "", &categories["home"], "10").await;
    let busy = listed(&app, &alice, "Busy lamp", "", &categories["home"], "10").await;
    bid(&app, &bob, &busy.listing_id, "10").await;
    bid(&app, &carol, &busy.listing_id, "25").await;
    let summary = wait_for_summary(&app, &busy.listing_id, "two bids", |summary| {
        summary.bid_count == 2
    })
    .await;
    // Proxy bidding: carol leads at bob's maximum plus one increment.
    assert_eq!(summary.current_price, Some(usd("10.50")));
    assert_eq!(summary.status, pb::AuctionStatus::Open as i32);
    let by_bids = run(
        &app,
        search(
            "lamp",
            pb::SearchFilter::default(),
            pb::SearchSort::BidCountDesc,
        ),
    )
    .await;
    assert_eq!(titles(&by_bids), ["Busy lamp", "Quiet lamp"]);
    let pricey = run(
        &app,
        search(
            "lamp",
            pb::SearchFilter {
                min_price: Some(usd("10.25")),
                ..pb::SearchFilter::default()
            },
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert_eq!(titles(&pricey), ["Busy lamp"]);
    assert_eq!(pricey.listings[0].bid_count, 2);
    // Cancelling moves it out of the default statuses.
    catalog(&app)
        .await
        .cancel_listing(with_token(
            pb::CancelListingRequest {
                request_id: request_id(),
                listing_id: quiet.listing_id.clone(),
                reason: "Withdrawn".to_owned(),
            },
            &alice.token,
        ))
        .await
        .unwrap();
    let remaining = run(
        &app,
        search(
            "lamp",
            pb::SearchFilter::default(),
            pb::SearchSort::Unspecified,
        ),
    )
    .await;
    assert_eq!(titles(&remaining), ["Busy lamp"]);
    app.stop().await;
}

/// A bid event as bidding would publish it, at engine sequence `sequence`.
fn bid_event(listing: &pb::Listing, sequence: u64, bidder: &User, price: &str) -> Envelope {
    Envelope::new(
        "test",
        bus::TOPIC_AUCTION,
        listing.listing_id.clone(),
        auction_platform::now_ms(),
        &pb::BusAuctionEvent {
            auction_id: listing.listing_id.clone(),
            sequence,
            kind: Some(pb::bus_auction_event::Kind::BidPlaced(
                pb::BusAuctionBidPlaced {
                    bidder_id: bidder.id.to_string(),
                    price: Some(usd(price)),
                    leader_id: bidder.id.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        },
    )
}

/// Bus events handed to the catalog in one batch: each applies once (the
/// same event twice in the batch, or again later, counts once), and an
/// event older than what the listing shows still counts its bid but does
/// not move the price back.
async fn a_batch_of_bus_events_applies_each_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = bidder(&app);
    let listing = listed(&app, &alice, "Batched lamp", "", &categories["home"], "10").await;
    let process_bus = bus::for_process(&app.config).unwrap();
    let newest = bid_event(&listing, 1_000, &bob, "30");
    let older = bid_event(&listing, 900, &bob, "20");
    process_bus
        .publish(&[newest.clone(), newest.clone(), older])
        .await
        .unwrap();
    // Again, after the batch: already processed.
    process_bus.publish(&[newest]).await.unwrap();
    // The bus keeps order: once this last one counts, everything before it
    // has been applied.
    process_bus
        .publish(&[bid_event(&listing, 950, &bob, "25")])
        .await
        .unwrap();
    let summary = wait_for_summary(&app, &listing.listing_id, "the last event", |summary| {
        summary.bid_count >= 3
    })
    .await;
    assert_eq!(summary.bid_count, 3, "{summary:?}");
    assert_eq!(summary.current_price, Some(usd("30.00")));
    app.stop().await;
}

// Proves a batch of bus events applies each event once, on SQLite.
#[tokio::test]
async fn a_batch_of_bus_events_applies_each_once_sqlite() {
    a_batch_of_bus_events_applies_each_once(Backend::Sqlite).await;
}

// Proves a batch of bus events applies each event once, on PostgreSQL.
#[tokio::test]
async fn a_batch_of_bus_events_applies_each_once_postgres() {
    a_batch_of_bus_events_applies_each_once(Backend::Postgres).await;
}

/// Collects the catalog's bus events.
struct Collector(tokio::sync::mpsc::UnboundedSender<pb::BusCatalogEvent>);

impl Handler for Collector {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let _ = self.0.send(envelope.decode()?);
            Ok(())
        })
    }
}

// Proves the watchlist: idempotent add, listing, watching flag and count,
// removal, and a WatchlistChanged event on the bus for each change.
#[tokio::test]
async fn watchlist_follows_listings_and_publishes_changes() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = bidder(&app);
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    bus::for_process(&app.config).unwrap().subscribe(
        Subscription {
            group: "catalog-test".to_owned(),
            topics: vec![bus::TOPIC_CATALOG.to_owned()],
            shutdown: auction_platform::Shutdown::new(),
        },
        Arc::new(Collector(sender)),
    );
    let listing = listed(&app, &alice, "Watched lamp", "", &categories["home"], "10").await;
    let mut client = catalog(&app).await;
    let add = pb::AddToWatchlistRequest {
        request_id: request_id(),
        listing_id: listing.listing_id.clone(),
    };
    let entry = client
        .add_to_watchlist(with_token(add.clone(), &bob.token))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(entry.listing.as_ref().unwrap().watcher_count, 1);
    let again = client
        .add_to_watchlist(with_token(
            pb::AddToWatchlistRequest {
                request_id: request_id(),
                ..add
            },
            &bob.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(again.add_time, entry.add_time, "the existing entry");
    let watched = client
        .get_listing(with_token(
            pb::GetListingRequest {
                listing_id: listing.listing_id.clone(),
            },
            &bob.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(watched.watching);
    assert_eq!(watched.summary.unwrap().watcher_count, 1);
    let list = client
        .list_watchlist(with_token(pb::ListWatchlistRequest::default(), &bob.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.entries.len(), 1);
    let unknown = client
        .add_to_watchlist(with_token(
            pb::AddToWatchlistRequest {
                request_id: request_id(),
                listing_id: uuid::Uuid::now_v7().to_string(),
            },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "LISTING_NOT_FOUND");

    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(pb::bus_catalog_event::Kind::WatchlistChanged(changed)) = event.kind else {
        panic!("{event:?}")
    };
    assert_eq!(
        (
            changed.user_id.as_str(),
            changed.auction_id.as_str(),
            changed.watching
        ),
        (
            bob.id.to_string().as_str(),
            listing.listing_id.as_str(),
            true
        )
    );

    let remove = pb::RemoveFromWatchlistRequest {
        request_id: request_id(),
        listing_id: listing.listing_id.clone(),
    };
    assert!(
        client
            .remove_from_watchlist(with_token(remove.clone(), &bob.token))
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    assert!(
        !client
            .remove_from_watchlist(with_token(remove, &bob.token))
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(pb::bus_catalog_event::Kind::WatchlistChanged(changed)) = event.kind else {
        panic!("{event:?}")
    };
    assert!(!changed.watching);
    let empty = client
        .list_watchlist(with_token(pb::ListWatchlistRequest::default(), &bob.token))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.entries.is_empty());
    app.stop().await;
}

async fn trending(app: &TestApp) -> Vec<String> {
    catalog(app)
        .await
        .list_trending_listings(pb::ListTrendingListingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .listings
        .into_iter()
        .map(|listing| listing.title)
        .collect()
}

// Proves a burst of bidding moves an auction up the trending list.
#[tokio::test]
async fn a_burst_of_bids_moves_an_auction_up_trending() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let watched = listed(&app, &alice, "Watched vase", "", &categories["home"], "10").await;
    let quiet = listed(&app, &alice, "Quiet vase", "", &categories["home"], "10").await;
    let mut client = catalog(&app).await;
    for _ in 0..2 {
        let watcher = bidder(&app);
        client
            .add_to_watchlist(with_token(
                pb::AddToWatchlistRequest {
                    request_id: request_id(),
                    listing_id: watched.listing_id.clone(),
                },
                &watcher.token,
            ))
            .await
            .unwrap();
    }
    client
        .add_to_watchlist(with_token(
            pb::AddToWatchlistRequest {
                request_id: request_id(),
                listing_id: quiet.listing_id.clone(),
            },
            &bidder(&app).token,
        ))
        .await
        .unwrap();
    assert_eq!(trending(&app).await, ["Watched vase", "Quiet vase"]);
    // A burst: three bids on the quiet one.
    for amount in ["10", "12", "15"] {
        bid(&app, &bidder(&app), &quiet.listing_id, amount).await;
    }
    wait_for_summary(&app, &quiet.listing_id, "three bids", |summary| {
        summary.bid_count == 3
    })
    .await;
    assert_eq!(trending(&app).await, ["Quiet vase", "Watched vase"]);
    app.stop().await;
}

async fn recommended(app: &TestApp, user: &User) -> Vec<(String, i32)> {
    catalog(app)
        .await
        .list_recommended_listings(with_token(
            pb::ListRecommendedListingsRequest::default(),
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recommendations
        .into_iter()
        .map(|recommendation| (recommendation.listing.unwrap().title, recommendation.reason))
        .collect()
}

async fn set_interests(app: &TestApp, user: &User, category_ids: &[&str]) {
    let event = pb::BusUserEvent {
        user_id: user.id.to_string(),
        event_time: None,
        kind: Some(pb::bus_user_event::Kind::InterestsChanged(
            pb::BusUserInterestsChanged {
                category_ids: category_ids.iter().map(|id| (*id).to_owned()).collect(),
            },
        )),
    };
    let envelope = Envelope::new(
        "user",
        bus::TOPIC_USER,
        user.id.to_string(),
        auction_platform::now_ms(),
        &event,
    );
    bus::for_process(&app.config)
        .unwrap()
        .publish(&[envelope])
        .await
        .unwrap();
}

async fn wait_for_recommendations(
    app: &TestApp,
    user: &User,
    check: impl Fn(&[(String, i32)]) -> bool,
) -> Vec<(String, i32)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let current = recommended(app, user).await;
        if check(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recommendations stayed {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Proves recommendations come from interests and activity, change when the
// interests change, and leave out what the user already follows.
#[tokio::test]
async fn recommendations_change_with_interests() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = bidder(&app);
    listed(
        &app,
        &alice,
        "Silver dollar",
        "",
        &categories["coins"],
        "50",
    )
    .await;
    listed(
        &app,
        &alice,
        "Rolex Submariner",
        "",
        &categories["watches"],
        "5000",
    )
    .await;
    let followed = listed(
        &app,
        &alice,
        "Gold sovereign",
        "",
        &categories["coins"],
        "400",
    )
    .await;
    assert!(
        recommended(&app, &bob).await.is_empty(),
        "nothing known about bob yet"
    );

    set_interests(&app, &bob, &[&categories["collectibles"]]).await;
    let coins = wait_for_recommendations(&app, &bob, |current| !current.is_empty()).await;
    let titles: HashSet<&str> = coins.iter().map(|(title, _)| title.as_str()).collect();
    assert_eq!(titles, HashSet::from(["Silver dollar", "Gold sovereign"]));
    assert!(
        coins
            .iter()
            .all(|(_, reason)| *reason == pb::RecommendationReason::InterestMatch as i32)
    );

    // Watching one removes it from the recommendations.
    catalog(&app)
        .await
        .add_to_watchlist(with_token(
            pb::AddToWatchlistRequest {
                request_id: request_id(),
                listing_id: followed.listing_id.clone(),
            },
            &bob.token,
        ))
        .await
        .unwrap();
    let after_watch = recommended(&app, &bob).await;
    assert_eq!(
        after_watch
            .iter()
            .map(|(title, _)| title.as_str())
            .collect::<Vec<_>>(),
        ["Silver dollar"]
    );

    set_interests(&app, &bob, &[&categories["fashion"]]).await;
    let watches = wait_for_recommendations(&app, &bob, |current| {
        current.iter().any(|(title, _)| title == "Rolex Submariner")
    })
    .await;
    assert_eq!(
        watches[0],
        (
            "Rolex Submariner".to_owned(),
            pb::RecommendationReason::InterestMatch as i32
        )
    );
    // The coin category stays, as activity (bob watches a coin), ranked after the interest.
    assert!(
        watches
            .iter()
            .any(|(title, reason)| title == "Silver dollar"
                && *reason != pb::RecommendationReason::InterestMatch as i32)
    );
    app.stop().await;
}
