//! ListAuctions over gRPC, on SQLite and on PostgreSQL: the contract's
//! order (soonest end first; live lots by session start, then lot number),
//! its page sizes and opaque tokens, and its category filter (descendants
//! included).

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{Backend, spawn_app, spawn_app_with, with_token};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::*;

/// Creates an auction from `request` (its ids and seller filled in).
async fn create_from(
    bidding: &mut BiddingServiceClient<Channel>,
    actors: &Actors,
    request: pb::CreateAuctionRequest,
) -> String {
    let request = pb::CreateAuctionRequest {
        request_id: format!("create-{}", Uuid::now_v7()),
        auction_id: Uuid::now_v7().to_string(),
        seller_id: actors.seller.to_string(),
        seller_handle: "seller".to_owned(),
        title: "A listed lot".to_owned(),
        ..request
    };
    bidding
        .create_auction(with_token(request, &actors.admin_token))
        .await
        .expect("create the auction")
        .into_inner()
        .state
        .expect("a state")
        .auction_id
}

/// A running auction (opened a second ago) with `parameters`, ending after
/// `ends_in`.
fn running(parameters: pb::AuctionParameters, ends_in: Duration) -> pb::CreateAuctionRequest {
    pb::CreateAuctionRequest {
        parameters: Some(parameters),
        start_time: Some(at(Duration::from_secs(1), false)),
        end_time: Some(at(ends_in, true)),
        ..pb::CreateAuctionRequest::default()
    }
}

/// A live lot of `session`, which starts at `session_start` (the same for
/// every lot of the session, as the catalog gives it).
fn lot(
    auctioneer: Uuid,
    session: &str,
    lot_number: u32,
    session_start: prost_types::Timestamp,
) -> pb::CreateAuctionRequest {
    pb::CreateAuctionRequest {
        parameters: Some(pb::AuctionParameters {
            format: pb::AuctionFormat::Live as i32,
            format_parameters: Some(pb::auction_parameters::FormatParameters::LiveLot(
                pb::LiveLotParameters {
                    starting_price: Some(usd("10.00")),
                    ..pb::LiveLotParameters::default()
                },
            )),
        }),
        start_time: Some(session_start),
        live_session_id: session.to_owned(),
        lot_number,
        auctioneer_id: auctioneer.to_string(),
        ..pb::CreateAuctionRequest::default()
    }
}

/// Every page of a listing, following the tokens (bounded): the ids in
/// order and the size of each page.
async fn all_pages(
    bidding: &mut BiddingServiceClient<Channel>,
    request: pb::ListAuctionsRequest,
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    for _ in 0..50 {
        let page = bidding
            .list_auctions(pb::ListAuctionsRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("list a page")
            .into_inner();
        sizes.push(page.auctions.len());
        ids.extend(page.auctions.into_iter().map(|state| state.auction_id));
        if page.next_page_token.is_empty() {
            return (ids, sizes);
        }
        token = page.next_page_token;
    }
    panic!("more than 50 pages");
}

// Proves ListAuctions orders by the contract across pages: soonest end
// first, a live lot by its session's start and then its lot number, an
// auction without an end (Dutch) last; and a soft-close extension moves an
// auction to its new end.
async fn soonest_end_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let auctioneer = Uuid::now_v7();
    let minutes = |count: u64| Duration::from_secs(count * 60);
    // Created in an order unrelated to their ends (ids sort by creation).
    let late = create_from(
        &mut bidding,
        &actors,
        running(english("1.00", None), minutes(180)),
    )
    .await;
    let dutch = create_from(
        &mut bidding,
        &actors,
        running(
            pb::AuctionParameters {
                format: pb::AuctionFormat::Dutch as i32,
                format_parameters: Some(pb::auction_parameters::FormatParameters::Dutch(
                    pb::DutchParameters {
                        start_price: Some(usd("100.00")),
                        price_step: Some(usd("1.00")),
                        tick_interval: Some(prost_types::Duration {
                            seconds: 3_600,
                            nanos: 0,
                        }),
                        floor_price: Some(usd("50.00")),
                        quantity: 1,
                        max_units_per_buyer: 0,
                    },
                )),
            },
            minutes(10),
        ),
    )
    .await;
    // Ends in a minute; a bid within its 2-minute window moves the end to
    // 4 hours after the bid.
    let mut soft_close = english("1.00", None);
    if let Some(pb::auction_parameters::FormatParameters::English(parameters)) =
        soft_close.format_parameters.as_mut()
    {
        parameters.soft_close_window = Some(prost_types::Duration {
            seconds: 120,
            nanos: 0,
        });
        parameters.soft_close_extension = Some(prost_types::Duration {
            seconds: 4 * 3_600,
            nanos: 0,
        });
    }
    let sniped = create_from(&mut bidding, &actors, running(soft_close, minutes(1))).await;
    let sealed = create_from(
        &mut bidding,
        &actors,
        running(
            pb::AuctionParameters {
                format: pb::AuctionFormat::SealedFirstPrice as i32,
                format_parameters: Some(pb::auction_parameters::FormatParameters::Sealed(
                    pb::SealedParameters {
                        start_price: Some(usd("1.00")),
                        ..pb::SealedParameters::default()
                    },
                )),
            },
            minutes(120),
        ),
    )
    .await;
    let evening = Uuid::now_v7().to_string();
    let evening_start = at(minutes(90), true);
    let evening_2 = create_from(
        &mut bidding,
        &actors,
        lot(auctioneer, &evening, 2, evening_start),
    )
    .await;
    let evening_1 = create_from(
        &mut bidding,
        &actors,
        lot(auctioneer, &evening, 1, evening_start),
    )
    .await;
    let hour = create_from(
        &mut bidding,
        &actors,
        running(english("1.00", None), minutes(60)),
    )
    .await;
    let morning = Uuid::now_v7().to_string();
    let morning_1 = create_from(
        &mut bidding,
        &actors,
        lot(auctioneer, &morning, 1, at(minutes(30), true)),
    )
    .await;

    let everything = pb::ListAuctionsRequest {
        statuses: vec![
            pb::AuctionStatus::Scheduled as i32,
            pb::AuctionStatus::Open as i32,
            pb::AuctionStatus::Extended as i32,
        ],
        page_size: 3,
        ..pb::ListAuctionsRequest::default()
    };
    let (listed, sizes) = all_pages(&mut bidding, everything.clone()).await;
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        [
            &sniped, &morning_1, &hour, &evening_1, &evening_2, &sealed, &late, &dutch
        ],
        "soonest end first, live lots by session start then lot number, no end last"
    );
    assert_eq!(sizes, [3, 3, 2]);

    // Alice bids within the soft-close window: the auction now ends in 4
    // hours, after every other end.
    let bid = bidding
        .place_bid(with_token(
            pb::PlaceBidRequest {
                request_id: "snipe".to_owned(),
                auction_id: sniped.clone(),
                amount: Some(usd("1.00")),
            },
            &actors.alice_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bid.state.unwrap().status,
        pb::AuctionStatus::Extended as i32
    );
    let (listed, _) = all_pages(&mut bidding, everything).await;
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        [
            &morning_1, &hour, &evening_1, &evening_2, &sealed, &late, &sniped, &dutch
        ],
        "the extended auction sorts at its new end"
    );
    app.stop().await;
}

#[tokio::test]
async fn soonest_end_first_sqlite() {
    soonest_end_first(Backend::Sqlite).await;
}

#[tokio::test]
async fn soonest_end_first_postgres() {
    soonest_end_first(Backend::Postgres).await;
}

// Proves the contract's page sizes (default 50, a negative size like 0 as
// ListBids and ListMyBids treat it, larger ones clamped to 200) and that a
// token we did not issue, or one issued for other filters, is
// INVALID_ARGUMENT PAGE_TOKEN_INVALID.
async fn page_sizes_and_tokens(backend: Backend) {
    // 201 creates in a row: beyond the gateway's default burst per user.
    let app = spawn_app_with(backend, |config| {
        config.gateway.user_requests_per_second = 100_000;
        config.gateway.user_burst = 100_000;
    })
    .await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let mut created = Vec::new();
    for index in 0..201 {
        let ends_in = Duration::from_secs(3_600 + index);
        created.push(
            create_from(
                &mut bidding,
                &actors,
                running(english("1.00", None), ends_in),
            )
            .await,
        );
    }
    let list = |page_size: i32, page_token: &str| pb::ListAuctionsRequest {
        page_size,
        page_token: page_token.to_owned(),
        ..pb::ListAuctionsRequest::default()
    };
    for page_size in [0, -7] {
        let page = bidding
            .list_auctions(list(page_size, ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            page.auctions.len(),
            50,
            "page_size {page_size}: the default"
        );
        assert!(!page.next_page_token.is_empty());
    }
    let first = bidding
        .list_auctions(list(1_000, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.auctions.len(), 200, "clamped to the maximum");
    let rest = bidding
        .list_auctions(list(1_000, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&String> = first
        .auctions
        .iter()
        .chain(&rest.auctions)
        .map(|state| &state.auction_id)
        .collect();
    assert_eq!(listed, created.iter().collect::<Vec<_>>());
    assert!(rest.next_page_token.is_empty(), "the last page");

    // Not ours: garbage, an auction id (this RPC's tokens before), and a
    // token of ours for other filters.
    let for_a_category = pb::ListAuctionsRequest {
        category_id: "coins".to_owned(),
        ..list(1_000, &first.next_page_token)
    };
    for request in [list(10, "nonsense"), list(10, &created[0]), for_a_category] {
        let refused = bidding.list_auctions(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(reason(&refused), "PAGE_TOKEN_INVALID");
    }
    app.stop().await;
}

#[tokio::test]
async fn page_sizes_and_tokens_sqlite() {
    page_sizes_and_tokens(Backend::Sqlite).await;
}

#[tokio::test]
async fn page_sizes_and_tokens_postgres() {
    page_sizes_and_tokens(Backend::Postgres).await;
}

// Proves the category filter takes the category's descendants too (the
// category anywhere in an auction's path), like WatchMarket's.
async fn category_with_descendants(backend: Backend) {
    let app = spawn_app(backend).await;
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let in_category = |category: &str, path: &[&str], ends_in: Duration| pb::CreateAuctionRequest {
        category_id: category.to_owned(),
        category_path_ids: path.iter().map(|id| (*id).to_owned()).collect(),
        ..running(english("1.00", None), ends_in)
    };
    let coins = create_from(
        &mut bidding,
        &actors,
        in_category(
            "coins",
            &["collectibles", "coins"],
            Duration::from_secs(3_600),
        ),
    )
    .await;
    let stamps = create_from(
        &mut bidding,
        &actors,
        in_category(
            "stamps",
            &["collectibles", "stamps"],
            Duration::from_secs(7_200),
        ),
    )
    .await;
    let cars = create_from(
        &mut bidding,
        &actors,
        in_category("cars", &["vehicles", "cars"], Duration::from_secs(5_400)),
    )
    .await;
    for (category, expected) in [
        ("collectibles", vec![&coins, &stamps]),
        ("coins", vec![&coins]),
        ("vehicles", vec![&cars]),
        ("cars", vec![&cars]),
        ("", vec![&coins, &cars, &stamps]),
        ("furniture", Vec::new()),
    ] {
        let listed: Vec<String> = bidding
            .list_auctions(pb::ListAuctionsRequest {
                category_id: category.to_owned(),
                ..pb::ListAuctionsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .auctions
            .into_iter()
            .map(|state| state.auction_id)
            .collect();
        assert_eq!(
            listed.iter().collect::<Vec<_>>(),
            expected,
            "category {category:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn category_with_descendants_sqlite() {
    category_with_descendants(Backend::Sqlite).await;
}

#[tokio::test]
async fn category_with_descendants_postgres() {
    category_with_descendants(Backend::Postgres).await;
}
