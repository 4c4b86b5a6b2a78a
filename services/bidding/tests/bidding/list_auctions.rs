//! ListAuctions over gRPC, on SQLite and on PostgreSQL: its page sizes and
//! opaque tokens.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{Backend, spawn_app_with, with_token};
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

// Proves the contract's page sizes (default 50, a negative size like 0 as
// ListBids and ListMyBids treat it, larger ones clamped to 200) and that a
// token we did not issue is INVALID_ARGUMENT PAGE_TOKEN_INVALID.
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

    // Not ours.
    let refused = bidding
        .list_auctions(list(10, "nonsense"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "PAGE_TOKEN_INVALID");
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
