//! Issue 10 over the real wire: the user service publishes BusUserEvent
//! through its outbox. A user who names a category among their interests
//! (UserService.UpdateProfile) is told when a seller lists an item of that
//! category through the catalog and its auction opens
//! (NEW_AUCTION_MATCHING_INTERESTS in the NotificationService inbox); a
//! user without that interest is not. No hand-made events: every service
//! runs in one process with the in-process bus.

use std::collections::HashMap;
use std::time::Duration;

use auction_proto::v1 as pb;
use auction_proto::v1::catalog_service_client::CatalogServiceClient;
use auction_proto::v1::notification_service_client::NotificationServiceClient;
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_testkit::{Backend, TestApp, TestUser, spawn_app, with_token};
use uuid::Uuid;

/// How long a test waits for an asynchronous effect (events relayed and
/// consumed, the auction opened).
const WAIT: Duration = Duration::from_secs(20);

async fn categories(app: &TestApp) -> Vec<pb::Category> {
    CatalogServiceClient::new(app.channel().await)
        .list_categories(pb::ListCategoriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .categories
}

async fn set_interests(app: &TestApp, user: &TestUser, category_ids: &[&str]) {
    let updated = UserServiceClient::new(app.channel().await)
        .update_profile(with_token(
            pb::UpdateProfileRequest {
                request_id: Uuid::now_v7().to_string(),
                profile: Some(pb::ProfileUpdate {
                    interest_category_ids: category_ids.iter().map(|id| (*id).to_owned()).collect(),
                    ..pb::ProfileUpdate::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["interest_category_ids".to_owned()],
                }),
            },
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stored = updated
        .user
        .unwrap()
        .private_profile
        .unwrap()
        .interest_category_ids;
    stored.sort();
    let mut wanted: Vec<String> = category_ids.iter().map(|id| (*id).to_owned()).collect();
    wanted.sort();
    assert_eq!(stored, wanted);
}

async fn interest_notifications(app: &TestApp, user: &TestUser) -> Vec<pb::Notification> {
    NotificationServiceClient::new(app.channel().await)
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                types: vec![pb::NotificationType::NewAuctionMatchingInterests as i32],
                page_size: 100,
                ..pb::ListNotificationsRequest::default()
            },
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications
}

async fn interests_reach_notifications(backend: Backend) {
    let app = spawn_app(backend).await;
    let categories = categories(&app).await;
    let by_id: HashMap<&str, &pb::Category> = categories
        .iter()
        .map(|category| (category.category_id.as_str(), category))
        .collect();
    let cameras = categories
        .iter()
        .find(|category| category.slug == "cameras")
        .unwrap();
    // Another root: neither cameras nor one of its ancestors.
    let mut path = vec![cameras.category_id.as_str()];
    while let Some(parent) = by_id
        .get(path[path.len() - 1])
        .map(|category| category.parent_category_id.as_str())
        .filter(|parent| !parent.is_empty())
    {
        path.push(parent);
    }
    let other = categories
        .iter()
        .find(|category| category.depth == 0 && !path.contains(&category.category_id.as_str()))
        .unwrap()
        .category_id
        .clone();
    let cameras = cameras.category_id.clone();
    let suffix = &Uuid::now_v7().simple().to_string()[20..];
    let fan = app.register_and_login(&format!("fan_{suffix}")).await;
    let bystander = app.register_and_login(&format!("by_{suffix}")).await;
    let seller = app.register_and_login(&format!("sel_{suffix}")).await;
    set_interests(&app, &fan, &[&cameras]).await;
    set_interests(&app, &bystander, &[&other]).await;
    let mut catalog = CatalogServiceClient::new(app.channel().await);
    let item = catalog
        .create_item(with_token(
            pb::CreateItemRequest {
                request_id: Uuid::now_v7().to_string(),
                title: "Leica M6".to_owned(),
                description: "Rangefinder".to_owned(),
                category_id: cameras.clone(),
                condition: pb::ItemCondition::UsedGood as i32,
                attributes: HashMap::new(),
                ship_from_country: "DE".to_owned(),
            },
            &seller.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    // The auction opens a moment after listing; the interests were
    // published at UpdateProfile's commit, long before (the in-process bus
    // delivers within milliseconds).
    let now = std::time::SystemTime::now();
    let listing = catalog
        .create_listing(with_token(
            pb::CreateListingRequest {
                request_id: Uuid::now_v7().to_string(),
                item_id: item.item_id,
                parameters: Some(pb::AuctionParameters {
                    format: pb::AuctionFormat::English as i32,
                    format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                        pb::EnglishParameters {
                            starting_price: Some(pb::Money {
                                currency: "USD".to_owned(),
                                amount: "100".to_owned(),
                            }),
                            ..pb::EnglishParameters::default()
                        },
                    )),
                }),
                start_time: Some(prost_types::Timestamp::from(now + Duration::from_secs(2))),
                end_time: Some(prost_types::Timestamp::from(
                    now + Duration::from_secs(3_600),
                )),
            },
            &seller.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .listing
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let notified = loop {
        let found = interest_notifications(&app, &fan).await;
        if !found.is_empty() {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no NEW_AUCTION_MATCHING_INTERESTS within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0].auction_id, listing.listing_id);
    assert_eq!(notified[0].user_id, fan.user_id.to_string());
    // One auction event planned every recipient in one transaction: the
    // fan's notification exists, so the bystander's would too.
    assert!(interest_notifications(&app, &bystander).await.is_empty());
    assert!(interest_notifications(&app, &seller).await.is_empty());
    app.stop().await;
}

// Proves interests set through UpdateProfile reach the notification
// service, which tells the interested user (and only them) about a new
// auction in that category, on SQLite.
#[tokio::test]
async fn interests_reach_notifications_sqlite() {
    interests_reach_notifications(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn interests_reach_notifications_postgres() {
    interests_reach_notifications(Backend::Postgres).await;
}
