//! Live sessions over gRPC: refusals with their reasons before anything is
//! scheduled, a bidding refusal that frees the items, and with live lots in
//! bidding (issue 5) the catalogue in running order, paging soonest
//! first, replays, lots in bidding, absentee bids, hammer prices, and the
//! starting notice in a notification inbox exactly once across a restart.

use std::time::Duration;

use auction_platform::auth::Role;
use auction_proto::v1 as pb;
use auction_proto::v1::notification_service_client::NotificationServiceClient;
use auction_testkit::{Backend, TestApp, spawn_app, spawn_with, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    User, WAIT, after, bidder, bidding, catalog, categories, create_item, create_listing, english,
    reason, request_id, seller, usd, violations,
};

/// A user with the SELLER and AUCTIONEER roles.
fn auctioneer(app: &TestApp) -> User {
    let id = Uuid::now_v7();
    User {
        id,
        token: app.access_token(id, &[Role::Seller, Role::Auctioneer]),
    }
}

fn lot(item_id: &str, starting: &str) -> pb::LiveLotSpec {
    pb::LiveLotSpec {
        item_id: item_id.to_owned(),
        parameters: Some(pb::LiveLotParameters {
            starting_price: Some(usd(starting)),
            ..pb::LiveLotParameters::default()
        }),
    }
}

fn new_session(
    title: &str,
    start: Duration,
    lots: Vec<pb::LiveLotSpec>,
) -> pb::CreateLiveSessionRequest {
    pb::CreateLiveSessionRequest {
        request_id: request_id(),
        title: title.to_owned(),
        description: "Evening sale".to_owned(),
        start_time: Some(after(start)),
        currency: "USD".to_owned(),
        lots,
    }
}

/// `count` items of `user` in the cameras category.
async fn items(app: &TestApp, user: &User, count: usize) -> Vec<String> {
    let categories = categories(app).await;
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        ids.push(
            create_item(
                app,
                user,
                &format!("Lot item {index}"),
                "",
                &categories["cameras"],
            )
            .await
            .item_id,
        );
    }
    ids
}

async fn create(
    app: &TestApp,
    user: &User,
    request: pb::CreateLiveSessionRequest,
) -> pb::LiveSession {
    catalog(app)
        .await
        .create_live_session(with_token(request, &user.token))
        .await
        .unwrap_or_else(|status| panic!("create live session: {status:?}"))
        .into_inner()
        .session
        .unwrap()
}

const HOUR: Duration = Duration::from_secs(3_600);

// Proves invalid sessions are refused with their reason and field before
// anything is recorded: empty lots, a start in the past or too soon, a lot
// in another currency, bad lot parameters, someone else's item, a caller
// without the AUCTIONEER role, an item already listed.
#[tokio::test]
async fn invalid_sessions_are_refused_with_their_reason() {
    let app = spawn_app(Backend::Sqlite).await;
    let dave = auctioneer(&app);
    let own = items(&app, &dave, 2).await;
    let mut client = catalog(&app).await;
    let mut refuse = async |user: &User, request: pb::CreateLiveSessionRequest| {
        client
            .create_live_session(with_token(request, &user.token))
            .await
            .unwrap_err()
    };
    let empty = refuse(&dave, new_session("Empty", HOUR, vec![])).await;
    assert_eq!(
        (empty.code(), reason(&empty).as_str()),
        (Code::InvalidArgument, "PARAMETERS_INVALID")
    );
    assert_eq!(violations(&empty), ["lots"]);

    let past = refuse(
        &dave,
        pb::CreateLiveSessionRequest {
            start_time: Some(prost_types::Timestamp::from(
                std::time::SystemTime::now() - HOUR,
            )),
            ..new_session("Past", HOUR, vec![lot(&own[0], "10")])
        },
    )
    .await;
    assert_eq!(
        (past.code(), reason(&past).as_str()),
        (Code::InvalidArgument, "SCHEDULE_INVALID")
    );
    let too_soon = refuse(
        &dave,
        new_session("Soon", Duration::from_secs(60), vec![lot(&own[0], "10")]),
    )
    .await;
    assert_eq!(reason(&too_soon), "SCHEDULE_INVALID");

    let mut euro = lot(&own[0], "10");
    euro.parameters.as_mut().unwrap().starting_price = Some(pb::Money {
        currency: "EUR".to_owned(),
        amount: "10".to_owned(),
    });
    let mismatch = refuse(&dave, new_session("Euro", HOUR, vec![euro])).await;
    assert_eq!(
        (mismatch.code(), reason(&mismatch).as_str()),
        (Code::InvalidArgument, "CURRENCY_MISMATCH")
    );
    assert_eq!(violations(&mismatch), ["lots[0].parameters.starting_price"]);

    let mut low_reserve = lot(&own[1], "10");
    low_reserve.parameters.as_mut().unwrap().reserve_price = Some(usd("5"));
    let bad = refuse(
        &dave,
        new_session("Reserve", HOUR, vec![lot(&own[0], "10"), low_reserve]),
    )
    .await;
    assert_eq!(
        (bad.code(), reason(&bad).as_str()),
        (Code::InvalidArgument, "PARAMETERS_INVALID")
    );
    assert_eq!(violations(&bad), ["lots[1].parameters.reserve_price"]);
    let mut fast = lot(&own[0], "10");
    fast.parameters.as_mut().unwrap().lot_countdown = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let countdown = refuse(&dave, new_session("Fast", HOUR, vec![fast])).await;
    assert_eq!(violations(&countdown), ["lots[0].parameters.lot_countdown"]);

    // Someone else's item.
    let alice = seller(&app);
    let hers = items(&app, &alice, 1).await;
    let foreign = refuse(
        &dave,
        new_session(
            "Foreign",
            HOUR,
            vec![lot(&own[0], "10"), lot(&hers[0], "10")],
        ),
    )
    .await;
    assert_eq!(
        (foreign.code(), reason(&foreign).as_str()),
        (Code::PermissionDenied, "NOT_OWNER")
    );

    // A seller who is not an auctioneer.
    let not_auctioneer = refuse(&alice, new_session("Mine", HOUR, vec![lot(&hers[0], "10")])).await;
    assert_eq!(
        (not_auctioneer.code(), reason(&not_auctioneer).as_str()),
        (Code::PermissionDenied, "ROLE_REQUIRED")
    );

    // An item with an active (ordinary) listing.
    create_listing(&app, &dave, &own[1], english("10", None), Some(HOUR)).await;
    let listed = refuse(
        &dave,
        new_session("Listed", HOUR, vec![lot(&own[0], "10"), lot(&own[1], "10")]),
    )
    .await;
    assert_eq!(
        (listed.code(), reason(&listed).as_str()),
        (Code::FailedPrecondition, "ITEM_HAS_ACTIVE_LISTING")
    );

    // Nothing was recorded: no session is listed, the first item is free.
    let sessions = catalog(&app)
        .await
        .list_live_sessions(pb::ListLiveSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(sessions.is_empty(), "{sessions:?}");
    create_listing(&app, &dave, &own[0], english("10", None), Some(HOUR)).await;
    app.stop().await;
}

// Proves a definite refusal by bidding (UNIMPLEMENTED while bidding had no
// live lots) is returned, leaves no visible session and frees the items
// (SQLite). Once bidding schedules live lots this request succeeds and the
// test proves nothing more: a refusal then needs a fault-injecting bidding.
#[tokio::test]
async fn a_refusal_by_bidding_frees_the_items() {
    let app = spawn_app(Backend::Sqlite).await;
    let dave = auctioneer(&app);
    let own = items(&app, &dave, 2).await;
    let request = new_session(
        "Refused",
        HOUR,
        vec![lot(&own[0], "10"), lot(&own[1], "20")],
    );
    let outcome = catalog(&app)
        .await
        .create_live_session(with_token(request.clone(), &dave.token))
        .await;
    let Err(refused) = outcome else {
        // Bidding schedules live lots (issue 5 merged): nothing to prove here.
        app.stop().await;
        return;
    };
    assert_ne!(refused.code(), Code::Unavailable, "{refused:?}");
    let sessions = catalog(&app)
        .await
        .list_live_sessions(pb::ListLiveSessionsRequest {
            statuses: vec![
                pb::LiveSessionStatus::Scheduled as i32,
                pb::LiveSessionStatus::Cancelled as i32,
            ],
            ..pb::ListLiveSessionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(sessions.is_empty(), "{sessions:?}");
    // Items free again for an ordinary listing.
    create_listing(&app, &dave, &own[0], english("10", None), Some(HOUR)).await;
    create_listing(&app, &dave, &own[1], english("10", None), Some(HOUR)).await;
    app.stop().await;
}

async fn catalogue_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let dave = auctioneer(&app);
    let own = items(&app, &dave, 5).await;
    // Three sessions; created out of start order.
    let later = create(
        &app,
        &dave,
        new_session("Later", 3 * HOUR, vec![lot(&own[3], "5")]),
    )
    .await;
    let request = new_session(
        "Evening",
        HOUR,
        vec![lot(&own[2], "30"), lot(&own[0], "10"), lot(&own[1], "20")],
    );
    let evening = create(&app, &dave, request.clone()).await;
    let soon = create(
        &app,
        &dave,
        new_session("Soon", HOUR / 2, vec![lot(&own[4], "1")]),
    )
    .await;

    // The catalogue before the start: lots in the order given, numbered 1..n.
    assert_eq!(evening.status, pb::LiveSessionStatus::Scheduled as i32);
    assert_eq!(evening.current_lot_number, 0);
    let got = catalog(&app)
        .await
        .get_live_session(pb::GetLiveSessionRequest {
            session_id: evening.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(got, evening);
    let order: Vec<(u32, &str, Option<&pb::Money>)> = got
        .lots
        .iter()
        .map(|lot| {
            (
                lot.lot_number,
                lot.item_id.as_str(),
                lot.starting_price.as_ref(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1, own[2].as_str(), Some(&usd("30.00"))),
            (2, own[0].as_str(), Some(&usd("10.00"))),
            (3, own[1].as_str(), Some(&usd("20.00"))),
        ]
    );
    assert!(
        got.lots
            .iter()
            .all(|lot| lot.status == pb::AuctionStatus::Scheduled as i32
                && lot.hammer_price.is_none())
    );

    // Each lot is an auction in bidding: format LIVE, the session and lot number.
    for lot in &got.lots {
        let state = bidding(&app)
            .await
            .get_auction_state(pb::GetAuctionStateRequest {
                auction_id: lot.listing_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .state
            .unwrap();
        assert_eq!(state.format, pb::AuctionFormat::Live as i32);
        let Some(pb::auction_state::FormatState::LiveLot(live)) = state.format_state else {
            panic!("a live lot state: {state:?}");
        };
        assert_eq!(
            (live.session_id.as_str(), live.lot_number),
            (got.session_id.as_str(), lot.lot_number)
        );
        assert_eq!(live.auctioneer_id, dave.id.to_string());
    }

    // The same request id: the same session, replayed; other content refused.
    let replay = catalog(&app)
        .await
        .create_live_session(with_token(request.clone(), &dave.token))
        .await
        .unwrap();
    assert_eq!(
        replay.metadata().get("auction-idempotent-replay").unwrap(),
        "true"
    );
    assert_eq!(
        replay.into_inner().session.unwrap().session_id,
        evening.session_id
    );
    let reused = catalog(&app)
        .await
        .create_live_session(with_token(
            pb::CreateLiveSessionRequest {
                title: "Other".to_owned(),
                ..request.clone()
            },
            &dave.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (reused.code(), reason(&reused).as_str()),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
    );

    // Soonest start first, two per page.
    let mut client = catalog(&app).await;
    let first = client
        .list_live_sessions(pb::ListLiveSessionsRequest {
            page_size: 2,
            ..pb::ListLiveSessionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_live_sessions(pb::ListLiveSessionsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..pb::ListLiveSessionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let titles: Vec<&str> = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|session| session.title.as_str())
        .collect();
    assert_eq!(titles, ["Soon", "Evening", "Later"]);
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.sessions[0].session_id, later.session_id);
    assert_eq!(first.sessions[0].session_id, soon.session_id);
    assert_eq!(first.sessions[1].lots.len(), 3);
    let wrong = client
        .list_live_sessions(pb::ListLiveSessionsRequest {
            page_size: 2,
            auctioneer_id: Uuid::now_v7().to_string(),
            page_token: first.next_page_token.clone(),
            ..pb::ListLiveSessionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "PAGE_TOKEN_INVALID");
    let unknown = client
        .get_live_session(pb::GetLiveSessionRequest {
            session_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), reason(&unknown).as_str()),
        (Code::NotFound, "SESSION_NOT_FOUND")
    );

    // An absentee bid left on a lot through bidding is accepted; the
    // catalogue does not reveal it.
    let bob = bidder(&app);
    bidding(&app)
        .await
        .place_absentee_bid(with_token(
            pb::PlaceAbsenteeBidRequest {
                request_id: request_id(),
                auction_id: got.lots[0].listing_id.clone(),
                max_amount: Some(usd("45")),
            },
            &bob.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("absentee bid: {status:?}"));
    app.stop().await;
}

// Proves a session's lots show as a catalogue in running order before it
// starts, sessions page soonest first, request ids replay, each lot is a
// LIVE auction in bidding with its session, and absentee bids are taken
// (SQLite).
#[tokio::test]
async fn catalogue_in_running_order_sqlite() {
    catalogue_in_order(Backend::Sqlite).await;
}

// Same as the SQLite case on PostgreSQL.
#[tokio::test]
async fn catalogue_in_running_order_postgres() {
    catalogue_in_order(Backend::Postgres).await;
}

// Proves that after the auctioneer opens and hammers lot 1 and opens lot 2
// (which makes the hammer final), the session is LIVE on lot 2 and lot 1
// shows CLOSED with its hammer price.
#[tokio::test]
async fn hammered_lot_shows_its_price() {
    let app = spawn_app(Backend::Sqlite).await;
    let dave = auctioneer(&app);
    let own = items(&app, &dave, 2).await;
    let session = create(
        &app,
        &dave,
        new_session(
            "Hammer",
            Duration::from_secs(400),
            vec![lot(&own[0], "10"), lot(&own[1], "20")],
        ),
    )
    .await;
    let first = session.lots[0].listing_id.clone();
    let mut auctions = bidding(&app).await;
    auctions
        .open_lot(with_token(
            pb::OpenLotRequest {
                request_id: request_id(),
                auction_id: first.clone(),
            },
            &dave.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("open lot 1: {status:?}"));
    let bob = bidder(&app);
    crate::support::bid(&app, &bob, &first, "15.00").await;
    auctions
        .hammer_lot(with_token(
            pb::HammerLotRequest {
                request_id: request_id(),
                auction_id: first.clone(),
                expected_sequence: 0,
            },
            &dave.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("hammer lot 1: {status:?}"));
    auctions
        .open_lot(with_token(
            pb::OpenLotRequest {
                request_id: request_id(),
                auction_id: session.lots[1].listing_id.clone(),
            },
            &dave.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("open lot 2: {status:?}"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = catalog(&app)
            .await
            .get_live_session(pb::GetLiveSessionRequest {
                session_id: session.session_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        if now.lots[0].status == pb::AuctionStatus::Closed as i32 && now.current_lot_number == 2 {
            assert_eq!(now.status, pb::LiveSessionStatus::Live as i32);
            // A lone bidder's 15.00 is a maximum: the lot sells at its start.
            assert_eq!(now.lots[0].hammer_price, Some(usd("10.00")));
            assert_eq!(now.lots[1].status, pb::AuctionStatus::Open as i32);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// The LIVE_SESSION_STARTING notifications in `user`'s inbox.
async fn starting_notices(app: &TestApp, user: &User) -> Vec<pb::Notification> {
    NotificationServiceClient::new(app.channel().await)
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                types: vec![pb::NotificationType::LiveSessionStarting as i32],
                page_size: 100,
                ..pb::ListNotificationsRequest::default()
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications
}

// Proves the starting notice, due 15 minutes before the start, reaches the
// inboxes of a lot's watcher and of an absentee bidder exactly once, also
// when the catalog restarts around the due time and after it was sent, and
// that the absentee bid does not show in the catalogue (PostgreSQL).
#[tokio::test]
async fn starting_notice_reaches_watchers_once_across_restarts() {
    let app = spawn_app(Backend::Postgres).await;
    let config = (*app.config).clone();
    let dave = auctioneer(&app);
    let own = items(&app, &dave, 2).await;
    // Due about 15 seconds from now.
    let session = create(
        &app,
        &dave,
        new_session(
            "Notice",
            Duration::from_secs(15 * 60 + 15),
            vec![lot(&own[0], "10"), lot(&own[1], "20")],
        ),
    )
    .await;
    let carol = bidder(&app);
    catalog(&app)
        .await
        .add_to_watchlist(with_token(
            pb::AddToWatchlistRequest {
                request_id: request_id(),
                listing_id: session.lots[1].listing_id.clone(),
            },
            &carol.token,
        ))
        .await
        .unwrap();
    // An absentee bidder on lot 1 hears of it too.
    let dan = bidder(&app);
    bidding(&app)
        .await
        .place_absentee_bid(with_token(
            pb::PlaceAbsenteeBidRequest {
                request_id: request_id(),
                auction_id: session.lots[0].listing_id.clone(),
                max_amount: Some(usd("40")),
            },
            &dan.token,
        ))
        .await
        .unwrap_or_else(|status| panic!("absentee bid: {status:?}"));
    // Restart before (most likely) the notice is due.
    let data = app.stop().await;
    let app = spawn_with(config.clone(), data).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let notices = loop {
        let notices = starting_notices(&app, &carol).await;
        if !notices.is_empty() {
            break notices;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no starting notice within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].live_session_id, session.session_id);
    let absentee = starting_notices(&app, &dan).await;
    assert_eq!(absentee.len(), 1, "{absentee:?}");
    // The absentee bid stays secret in the catalogue: no bid, start price.
    let summary =
        crate::support::wait_for_summary(&app, &session.lots[0].listing_id, "lot 1", |_| true)
            .await;
    assert_eq!(
        (summary.bid_count, summary.current_price),
        (0, Some(usd("10.00")))
    );
    // After another restart, still exactly one.
    let data = app.stop().await;
    let app = spawn_with(config, data).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(starting_notices(&app, &carol).await.len(), 1);
    app.stop().await;
}
