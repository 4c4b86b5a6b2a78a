//! Items: create, get, update, list and delete over gRPC, with the category
//! tree, conditions, attributes, ownership and the running-auction rule.

use std::collections::HashMap;
use std::time::Duration;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, spawn_app, with_token};
use tonic::Code;

use crate::support::{
    bidder, catalog, categories, create_item, create_listing, english, new_item, reason,
    request_id, seller, violations,
};

async fn crud_round_trip(backend: Backend) {
    let app = spawn_app(backend).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let bob = seller(&app);
    let mut client = catalog(&app).await;

    let item = create_item(
        &app,
        &alice,
        "Leica M6",
        "Black chrome body.",
        &categories["cameras"],
    )
    .await;
    assert_eq!(item.seller_id, alice.id.to_string());
    assert_eq!(item.condition, pb::ItemCondition::UsedGood as i32);
    assert_eq!(item.attributes["brand"], "Leica");
    assert_eq!(item.ship_from_country, "DE");
    assert_eq!(item.version, 1);

    // The seller sees an unlisted item; nobody else does.
    let fetched = client
        .get_item(with_token(
            pb::GetItemRequest {
                item_id: item.item_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(fetched, item);
    let hidden = client
        .get_item(with_token(
            pb::GetItemRequest {
                item_id: item.item_id.clone(),
            },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (hidden.code(), reason(&hidden).as_str()),
        (Code::NotFound, "ITEM_NOT_FOUND")
    );

    // Update by mask, with the optimistic version.
    let updated = client
        .update_item(with_token(
            pb::UpdateItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
                item: Some(pb::ItemUpdate {
                    title: "Leica M6 TTL".to_owned(),
                    category_id: categories["electronics"].clone(),
                    attributes: HashMap::from([("year".to_owned(), "1998".to_owned())]),
                    ..pb::ItemUpdate::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "title".to_owned(),
                        "category_id".to_owned(),
                        "attributes".to_owned(),
                    ],
                }),
                expected_version: 1,
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(updated.title, "Leica M6 TTL");
    assert_eq!(updated.category_id, categories["electronics"]);
    assert_eq!(updated.description, "Black chrome body.");
    assert_eq!(
        updated.attributes,
        HashMap::from([("year".to_owned(), "1998".to_owned())])
    );
    assert_eq!(updated.version, 2);
    let stale = client
        .update_item(with_token(
            pb::UpdateItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
                item: Some(pb::ItemUpdate {
                    title: "Stale".to_owned(),
                    ..pb::ItemUpdate::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".to_owned()],
                }),
                expected_version: 1,
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (stale.code(), reason(&stale).as_str()),
        (Code::Aborted, "VERSION_CONFLICT")
    );

    // Another seller may not edit or delete it.
    let foreign = client
        .update_item(with_token(
            pb::UpdateItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
                item: Some(pb::ItemUpdate {
                    title: "Mine now".to_owned(),
                    ..pb::ItemUpdate::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".to_owned()],
                }),
                expected_version: 0,
            },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (foreign.code(), reason(&foreign).as_str()),
        (Code::PermissionDenied, "NOT_OWNER")
    );

    // Newest first, two per page, with a stable cursor.
    let second = create_item(&app, &alice, "Second", "", &categories["coins"]).await;
    let third = create_item(&app, &alice, "Third", "", &categories["coins"]).await;
    let first_page = client
        .list_items(with_token(
            pb::ListItemsRequest {
                page_size: 2,
                ..pb::ListItemsRequest::default()
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = first_page
        .items
        .iter()
        .map(|item| item.item_id.as_str())
        .collect();
    assert_eq!(ids, [third.item_id.as_str(), second.item_id.as_str()]);
    assert!(!first_page.next_page_token.is_empty());
    let last_page = client
        .list_items(with_token(
            pb::ListItemsRequest {
                page_size: 2,
                page_token: first_page.next_page_token.clone(),
                ..pb::ListItemsRequest::default()
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last_page.items.len(), 1);
    assert_eq!(last_page.items[0].item_id, item.item_id);
    assert!(last_page.next_page_token.is_empty());
    let other_sellers = client
        .list_items(with_token(
            pb::ListItemsRequest {
                seller_id: alice.id.to_string(),
                ..pb::ListItemsRequest::default()
            },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&other_sellers), "NOT_OWNER");
    let tampered = client
        .list_items(with_token(
            pb::ListItemsRequest {
                page_token: "bm9wZQ".to_owned(),
                ..pb::ListItemsRequest::default()
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&tampered), "PAGE_TOKEN_INVALID");

    // Deleted: gone for everyone.
    client
        .delete_item(with_token(
            pb::DeleteItemRequest {
                request_id: request_id(),
                item_id: second.item_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap();
    let gone = client
        .get_item(with_token(
            pb::GetItemRequest {
                item_id: second.item_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

// Proves the item lifecycle over gRPC on SQLite.
#[tokio::test]
async fn item_crud_round_trip_sqlite() {
    crud_round_trip(Backend::Sqlite).await;
}

// Proves the item lifecycle over gRPC on PostgreSQL.
#[tokio::test]
async fn item_crud_round_trip_postgres() {
    crud_round_trip(Backend::Postgres).await;
}

// Proves invalid items are refused with INVALID_ARGUMENT and the reason and
// field, and that only sellers create items.
#[tokio::test]
async fn invalid_items_are_refused_with_reasons() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let mut client = catalog(&app).await;
    let cases: Vec<(pb::CreateItemRequest, &str, &str)> = vec![
        (
            pb::CreateItemRequest {
                category_id: uuid::Uuid::now_v7().to_string(),
                ..new_item("Lamp", "", &categories["home"])
            },
            "CATEGORY_NOT_FOUND",
            "category_id",
        ),
        (
            pb::CreateItemRequest {
                title: String::new(),
                ..new_item("", "", &categories["home"])
            },
            "VALIDATION_FAILED",
            "title",
        ),
        (
            pb::CreateItemRequest {
                condition: 0,
                ..new_item("Lamp", "", &categories["home"])
            },
            "VALIDATION_FAILED",
            "condition",
        ),
        (
            pb::CreateItemRequest {
                attributes: HashMap::from([("Bad Key".to_owned(), "x".to_owned())]),
                ..new_item("Lamp", "", &categories["home"])
            },
            "VALIDATION_FAILED",
            "attributes",
        ),
        (
            pb::CreateItemRequest {
                ship_from_country: "Germany".to_owned(),
                ..new_item("Lamp", "", &categories["home"])
            },
            "VALIDATION_FAILED",
            "ship_from_country",
        ),
        (
            pb::CreateItemRequest {
                request_id: "no spaces allowed".to_owned(),
                ..new_item("Lamp", "", &categories["home"])
            },
            "REQUEST_ID_INVALID",
            "",
        ),
    ];
    for (request, expected_reason, field) in cases {
        let status = client
            .create_item(with_token(request, &alice.token))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{expected_reason}: {status:?}"
        );
        assert_eq!(reason(&status), expected_reason);
        if !field.is_empty() {
            assert_eq!(violations(&status), [field]);
        }
    }
    let buyer = bidder(&app);
    let status = client
        .create_item(with_token(
            new_item("Lamp", "", &categories["home"]),
            &buyer.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "ROLE_REQUIRED")
    );
    let anonymous = client
        .create_item(new_item("Lamp", "", &categories["home"]))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

// Proves CreateItem is idempotent: a retry returns the original item and is
// marked as a replay; the same key with other content is refused.
#[tokio::test]
async fn create_item_is_idempotent() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let mut client = catalog(&app).await;
    let mut request = new_item("Lamp", "Brass", &categories["home"]);
    request.attributes = (0..10)
        .map(|n| (format!("k{n}"), format!("v{n}")))
        .collect();
    let first = client
        .create_item(with_token(request.clone(), &alice.token))
        .await
        .unwrap();
    assert!(first.metadata().get("auction-idempotent-replay").is_none());
    let retry = client
        .create_item(with_token(request.clone(), &alice.token))
        .await
        .unwrap();
    assert_eq!(
        retry.metadata().get("auction-idempotent-replay").unwrap(),
        "true"
    );
    assert_eq!(retry.into_inner(), first.into_inner());
    let reused = client
        .create_item(with_token(
            pb::CreateItemRequest {
                title: "Other".to_owned(),
                ..request
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (reused.code(), reason(&reused).as_str()),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
    );
    app.stop().await;
}

// Proves an item cannot be deleted while its listing is scheduled or running,
// nor edited while it runs, and can be once the listing is cancelled.
#[tokio::test]
async fn items_in_a_running_auction_are_locked() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let mut client = catalog(&app).await;
    let item = create_item(
        &app,
        &alice,
        "Omega Speedmaster",
        "",
        &categories["watches"],
    )
    .await;
    let listing = create_listing(&app, &alice, &item.item_id, english("100", None), None).await;
    assert_eq!(listing.status, pb::AuctionStatus::Open as i32);

    let delete = client
        .delete_item(with_token(
            pb::DeleteItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (delete.code(), reason(&delete).as_str()),
        (Code::FailedPrecondition, "ITEM_HAS_ACTIVE_LISTING")
    );
    let edit = client
        .update_item(with_token(
            pb::UpdateItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
                item: Some(pb::ItemUpdate {
                    title: "Changed".to_owned(),
                    ..pb::ItemUpdate::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".to_owned()],
                }),
                expected_version: 0,
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (edit.code(), reason(&edit).as_str()),
        (Code::FailedPrecondition, "LISTING_NOT_EDITABLE")
    );
    let fetched = client
        .get_item(pb::GetItemRequest {
            item_id: item.item_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(
        fetched.active_listing_id, listing.listing_id,
        "a listed item is public"
    );

    client
        .cancel_listing(with_token(
            pb::CancelListingRequest {
                request_id: request_id(),
                listing_id: listing.listing_id.clone(),
                reason: "Sold elsewhere".to_owned(),
            },
            &alice.token,
        ))
        .await
        .unwrap();
    client
        .delete_item(with_token(
            pb::DeleteItemRequest {
                request_id: request_id(),
                item_id: item.item_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap();
    // A later listing of the deleted item is impossible.
    let relist = client
        .create_listing(with_token(
            crate::support::new_listing(
                &item.item_id,
                english("100", None),
                Some(Duration::from_secs(60)),
            ),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&relist), "ITEM_NOT_FOUND");
    app.stop().await;
}
