//! UpdateAuction over gRPC, on SQLite and PostgreSQL.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, spawn_app, spawn_with, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::support::*;

fn update(
    request_id: &str,
    auction_id: &str,
    parameters: Option<pb::AuctionParameters>,
    start_in: Option<Duration>,
    end_in: Option<Duration>,
) -> pb::UpdateAuctionRequest {
    pb::UpdateAuctionRequest {
        request_id: request_id.to_owned(),
        auction_id: auction_id.to_owned(),
        parameters,
        start_time: start_in.map(|offset| at(offset, true)),
        end_time: end_in.map(|offset| at(offset, true)),
        title: String::new(),
        expected_sequence: 0,
    }
}

async fn updates_follow_the_contract(backend: Backend) {
    let app = spawn_app(backend).await;
    let config = (*app.config).clone();
    let actors = actors(&app);
    let mut bidding = client(&app).await;
    let hour = Duration::from_secs(3_600);
    // A scheduled auction: opens in an hour.
    let created = bidding
        .create_auction(with_token(
            pb::CreateAuctionRequest {
                request_id: format!("create-{}", Uuid::now_v7()),
                auction_id: Uuid::now_v7().to_string(),
                seller_id: actors.seller.to_string(),
                seller_handle: "seller".to_owned(),
                title: "A test lot".to_owned(),
                parameters: Some(english("1.00", None)),
                start_time: Some(at(hour, true)),
                end_time: Some(at(2 * hour, true)),
                ..pb::CreateAuctionRequest::default()
            },
            &actors.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(created.status(), pb::AuctionStatus::Scheduled);
    let id = created.auction_id.clone();

    // The catalog (a service token) changes the starting price, the title
    // and the schedule: it opens in two seconds.
    let catalog = app.service_token("catalog");
    let change = pb::UpdateAuctionRequest {
        title: "Renamed".to_owned(),
        expected_sequence: created.sequence,
        ..update(
            "u-1",
            &id,
            Some(english("7.00", None)),
            Some(Duration::from_secs(2)),
            Some(hour),
        )
    };
    let updated = bidding
        .update_auction(with_token(change.clone(), &catalog))
        .await
        .unwrap()
        .into_inner();
    let state_after = updated.state.clone().unwrap();
    assert_eq!(state_after.status(), pb::AuctionStatus::Scheduled);
    assert_eq!(amount(&state_after.current_price), "7.00");
    assert_eq!(state_after.title, "Renamed");
    assert_eq!(state_after.sequence, created.sequence + 1);
    let read = state(&mut bidding, &id).await;
    assert_eq!(amount(&read.current_price), "7.00");
    assert_eq!(read.title, "Renamed");
    assert_eq!(read.start_time, state_after.start_time);

    // The same request id and content: the original answer; other content:
    // IDEMPOTENCY_KEY_REUSED.
    let replayed = bidding
        .update_auction(with_token(change.clone(), &catalog))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, updated);
    let reused = bidding
        .update_auction(with_token(
            pb::UpdateAuctionRequest {
                title: "Other".to_owned(),
                ..change.clone()
            },
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (reused.code(), reason(&reused).as_str()),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
    );

    // Wrong callers: PERMISSION_DENIED (the seller edits through the catalog).
    for token in [&actors.seller_token, &actors.alice_token] {
        let denied = bidding
            .update_auction(with_token(
                update("u-denied", &id, None, Some(hour), None),
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    // Invalid specs: INVALID_ARGUMENT with the contract's reasons.
    let backwards = bidding
        .update_auction(with_token(
            update("u-2", &id, None, Some(hour), Some(Duration::from_secs(60))),
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (backwards.code(), reason(&backwards).as_str()),
        (Code::InvalidArgument, "SCHEDULE_INVALID")
    );
    let malformed = bidding
        .update_auction(with_token(
            update("u-3", &id, Some(english("abc", None)), None, None),
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (malformed.code(), reason(&malformed).as_str()),
        (Code::InvalidArgument, "PARAMETERS_INVALID")
    );
    let sealed = pb::AuctionParameters {
        format: pb::AuctionFormat::SealedFirstPrice as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::Sealed(
            pb::SealedParameters {
                start_price: Some(usd("5.00")),
                ..pb::SealedParameters::default()
            },
        )),
    };
    let format_change = bidding
        .update_auction(with_token(
            update("u-4", &id, Some(sealed), None, None),
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (format_change.code(), reason(&format_change).as_str()),
        (Code::InvalidArgument, "PARAMETERS_INVALID")
    );
    // An expected sequence that is not the auction's: ABORTED
    // VERSION_CONFLICT (0 would mean "no check").
    let stale = bidding
        .update_auction(with_token(
            pb::UpdateAuctionRequest {
                expected_sequence: state_after.sequence + 1,
                ..update("u-5", &id, None, None, None)
            },
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (stale.code(), reason(&stale).as_str()),
        (Code::Aborted, "VERSION_CONFLICT")
    );
    // Nothing refused changed it.
    assert_eq!(
        state(&mut bidding, &id).await.sequence,
        state_after.sequence
    );

    // It opens at the new time with the new parameters: then no more edits.
    let mut opened = state(&mut bidding, &id).await;
    for _ in 0..100 {
        if opened.status() == pb::AuctionStatus::Open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        opened = state(&mut bidding, &id).await;
    }
    assert_eq!(opened.status(), pb::AuctionStatus::Open);
    let low = bidding
        .set_max_bid(max_bid(&id, "u-bid-1", "6.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&low), "BID_BELOW_MINIMUM");
    let too_late = bidding
        .update_auction(with_token(
            update("u-6", &id, Some(english("2.00", None)), Some(hour), None),
            &catalog,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (too_late.code(), reason(&too_late).as_str()),
        (Code::FailedPrecondition, "LISTING_NOT_EDITABLE")
    );

    // After a restart the log replays from the new spec.
    let data = app.stop().await;
    let app = spawn_with(config, data).await;
    let mut bidding = client(&app).await;
    let after_restart = state(&mut bidding, &id).await;
    assert_eq!(after_restart.title, "Renamed");
    assert_eq!(amount(&after_restart.current_price), "7.00");
    assert_eq!(after_restart.status(), pb::AuctionStatus::Open);
    let replayed_again = bidding
        .update_auction(with_token(change, &app.service_token("catalog")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed_again, updated, "the outcome is remembered");
    app.stop().await;
}

// Proves UpdateAuction applies an allowed change (visible in GetAuctionState
// and in the opening), refuses after opening with LISTING_NOT_EDITABLE,
// refuses wrong callers, invalid specs and stale sequences precisely,
// replays a request id, and survives a restart (SQLite).
#[tokio::test]
async fn update_auction_sqlite() {
    updates_follow_the_contract(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn update_auction_postgres() {
    updates_follow_the_contract(Backend::Postgres).await;
}
