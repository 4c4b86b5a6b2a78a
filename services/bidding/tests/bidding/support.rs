//! Shared set-up: an app, tokens for a seller, bidders and an admin, and
//! helpers to create auctions and read states.

use std::time::{Duration, SystemTime};

use auction_platform::auth::Role;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{TestApp, with_token};
use tonic::transport::Channel;
use uuid::Uuid;

#[allow(dead_code, reason = "ids kept for tests that check positions")]
pub struct Actors {
    pub seller: Uuid,
    pub admin_token: String,
    pub seller_token: String,
    pub alice: Uuid,
    pub alice_token: String,
    pub bob: Uuid,
    pub bob_token: String,
}

pub fn actors(app: &TestApp) -> Actors {
    let seller = Uuid::now_v7();
    let alice = Uuid::now_v7();
    let bob = Uuid::now_v7();
    Actors {
        seller,
        admin_token: app.access_token(Uuid::now_v7(), &[Role::Admin]),
        seller_token: app.access_token(seller, &[Role::Seller, Role::Bidder]),
        alice,
        alice_token: app.access_token(alice, &[Role::Bidder]),
        bob,
        bob_token: app.access_token(bob, &[Role::Bidder]),
    }
}

pub async fn client(app: &TestApp) -> BiddingServiceClient<Channel> {
    BiddingServiceClient::new(app.channel().await)
}

pub fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

pub fn at(offset: Duration, later: bool) -> prost_types::Timestamp {
    let now = SystemTime::now();
    let when = if later { now + offset } else { now - offset };
    prost_types::Timestamp::from(when)
}

pub fn english(starting: &str, reserve: Option<&str>) -> pb::AuctionParameters {
    pb::AuctionParameters {
        format: pb::AuctionFormat::English as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::English(
            pb::EnglishParameters {
                starting_price: Some(usd(starting)),
                reserve_price: reserve.map(usd),
                ..pb::EnglishParameters::default()
            },
        )),
    }
}

/// Creates an auction that opened a second ago and ends after `ends_in`.
pub async fn create(
    client: &mut BiddingServiceClient<Channel>,
    actors: &Actors,
    parameters: pb::AuctionParameters,
    ends_in: Duration,
) -> pb::AuctionState {
    let request = pb::CreateAuctionRequest {
        request_id: format!("create-{}", Uuid::now_v7()),
        auction_id: Uuid::now_v7().to_string(),
        seller_id: actors.seller.to_string(),
        seller_handle: "seller".to_owned(),
        title: "A test lot".to_owned(),
        parameters: Some(parameters),
        start_time: Some(at(Duration::from_secs(1), false)),
        end_time: Some(at(ends_in, true)),
        ..pb::CreateAuctionRequest::default()
    };
    client
        .create_auction(with_token(request, &actors.admin_token))
        .await
        .expect("create the auction")
        .into_inner()
        .state
        .expect("a state")
}

pub async fn state(
    client: &mut BiddingServiceClient<Channel>,
    auction_id: &str,
) -> pb::AuctionState {
    client
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: auction_id.to_owned(),
        })
        .await
        .expect("get the state")
        .into_inner()
        .state
        .expect("a state")
}

pub fn max_bid(
    auction_id: &str,
    request_id: &str,
    amount: &str,
    token: &str,
) -> tonic::Request<pb::SetMaxBidRequest> {
    with_token(
        pb::SetMaxBidRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            max_amount: Some(usd(amount)),
        },
        token,
    )
}

pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn amount(money: &Option<pb::Money>) -> String {
    money
        .as_ref()
        .map(|money| money.amount.clone())
        .unwrap_or_default()
}
