//! Helpers shared by the catalog's wire tests.

use std::collections::HashMap;
use std::time::Duration;

use auction_platform::auth::Role;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_proto::v1::catalog_service_client::CatalogServiceClient;
use auction_testkit::{TestApp, with_token};
use tonic::transport::Channel;
use uuid::Uuid;

/// How long a test waits for an asynchronous effect (a bus event applied).
pub const WAIT: Duration = Duration::from_secs(20);

/// A signed-in user of a test.
#[derive(Debug, Clone)]
pub struct User {
    /// Its id.
    pub id: Uuid,
    /// Its access token.
    pub token: String,
}

/// A seller (SELLER and BIDDER roles), as the user service would sign them.
pub fn seller(app: &TestApp) -> User {
    let id = Uuid::now_v7();
    User {
        id,
        token: app.access_token(id, &[Role::Seller, Role::Bidder]),
    }
}

/// A user with only the BIDDER role.
pub fn bidder(app: &TestApp) -> User {
    let id = Uuid::now_v7();
    User {
        id,
        token: app.access_token(id, &[Role::Bidder]),
    }
}

/// A catalog client.
pub async fn catalog(app: &TestApp) -> CatalogServiceClient<Channel> {
    CatalogServiceClient::new(app.channel().await)
}

/// A bidding client.
pub async fn bidding(app: &TestApp) -> BiddingServiceClient<Channel> {
    BiddingServiceClient::new(app.channel().await)
}

/// The reason of a refusal (the `auction-error-reason` trailer).
pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The field violations of a refusal.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use prost::Message as _;
    let Ok(details) = tonic_types::pb::Status::decode(status.details()) else {
        return Vec::new();
    };
    details
        .details
        .iter()
        .filter(|any| any.type_url.ends_with("auction.v1.ErrorDetail"))
        .filter_map(|any| pb::ErrorDetail::decode(any.value.as_slice()).ok())
        .flat_map(|detail| detail.field_violations)
        .map(|violation| violation.field)
        .collect()
}

/// Category ids by slug.
pub async fn categories(app: &TestApp) -> HashMap<String, String> {
    catalog(app)
        .await
        .list_categories(pb::ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .categories
        .into_iter()
        .map(|category| (category.slug, category.category_id))
        .collect()
}

/// A request id.
pub fn request_id() -> String {
    Uuid::now_v7().to_string()
}

/// An amount in US dollars.
pub fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// Now plus `offset`.
pub fn after(offset: Duration) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now() + offset)
}

/// A CreateItem request.
pub fn new_item(title: &str, description: &str, category_id: &str) -> pb::CreateItemRequest {
    pb::CreateItemRequest {
        request_id: request_id(),
        title: title.to_owned(),
        description: description.to_owned(),
        category_id: category_id.to_owned(),
        condition: pb::ItemCondition::UsedGood as i32,
        attributes: HashMap::from([("brand".to_owned(), "Leica".to_owned())]),
        ship_from_country: "DE".to_owned(),
    }
}

/// Creates an item as `user`.
pub async fn create_item(
    app: &TestApp,
    user: &User,
    title: &str,
    description: &str,
    category_id: &str,
) -> pb::Item {
    catalog(app)
        .await
        .create_item(with_token(
            new_item(title, description, category_id),
            &user.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("create item: {status:?}"))
        .into_inner()
        .item
        .unwrap()
}

/// English parameters in USD.
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

/// A CreateListing request starting after `start` (None = now), one hour long.
pub fn new_listing(
    item_id: &str,
    parameters: pb::AuctionParameters,
    start: Option<Duration>,
) -> pb::CreateListingRequest {
    let start_offset = start.unwrap_or(Duration::ZERO);
    pb::CreateListingRequest {
        request_id: request_id(),
        item_id: item_id.to_owned(),
        parameters: Some(parameters),
        start_time: start.map(after),
        end_time: Some(after(start_offset + Duration::from_secs(3_600))),
    }
}

/// Lists `user`'s item with `parameters` and returns the listing.
pub async fn create_listing(
    app: &TestApp,
    user: &User,
    item_id: &str,
    parameters: pb::AuctionParameters,
    start: Option<Duration>,
) -> pb::Listing {
    catalog(app)
        .await
        .create_listing(with_token(
            new_listing(item_id, parameters, start),
            &user.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("create listing: {status:?}"))
        .into_inner()
        .listing
        .unwrap()
}

/// Places a straight bid as `user`.
pub async fn bid(app: &TestApp, user: &User, auction_id: &str, amount: &str) {
    bidding(app)
        .await
        .place_bid(with_token(
            pb::PlaceBidRequest {
                request_id: request_id(),
                auction_id: auction_id.to_owned(),
                amount: Some(usd(amount)),
            },
            &user.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("bid {amount}: {status:?}"));
}

/// Waits until `check` holds for the listing's summary, or fails.
pub async fn wait_for_summary(
    app: &TestApp,
    listing_id: &str,
    what: &str,
    check: impl Fn(&pb::ListingSummary) -> bool,
) -> pb::ListingSummary {
    let mut client = catalog(app).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let summary = client
            .get_listing(pb::GetListingRequest {
                listing_id: listing_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .summary
            .unwrap();
        if check(&summary) {
            return summary;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
