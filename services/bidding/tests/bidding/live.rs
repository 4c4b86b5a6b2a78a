//! Live lots over gRPC: each lot its own auction, driven by its auctioneer;
//! absentee bids, the provisional hammer and its finalisation, the session
//! rules across lots, refusals, retries and a restart.

use std::time::Duration;

use auction_platform::auth::Role;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::{Backend, TestApp, spawn_app_with, spawn_with, with_token};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::*;

/// The people of a session.
struct Floor {
    auctioneer: Uuid,
    auctioneer_token: String,
    other_auctioneer_token: String,
    carol_token: String,
}

fn floor(app: &TestApp) -> Floor {
    let auctioneer = Uuid::now_v7();
    Floor {
        auctioneer,
        auctioneer_token: app.access_token(auctioneer, &[Role::Auctioneer]),
        other_auctioneer_token: app.access_token(Uuid::now_v7(), &[Role::Auctioneer]),
        carol_token: app.access_token(Uuid::now_v7(), &[Role::Bidder]),
    }
}

fn live_parameters(starting: &str, countdown_s: i64) -> pb::AuctionParameters {
    pb::AuctionParameters {
        format: pb::AuctionFormat::Live as i32,
        format_parameters: Some(pb::auction_parameters::FormatParameters::LiveLot(
            pb::LiveLotParameters {
                starting_price: Some(usd(starting)),
                lot_countdown: Some(prost_types::Duration {
                    seconds: countdown_s,
                    nanos: 0,
                }),
                ..pb::LiveLotParameters::default()
            },
        )),
    }
}

fn lot_request(
    actors: &Actors,
    floor: &Floor,
    session: &str,
    lot_number: u32,
    parameters: pb::AuctionParameters,
) -> pb::CreateAuctionRequest {
    pb::CreateAuctionRequest {
        request_id: format!("lot-{}", Uuid::now_v7()),
        auction_id: Uuid::now_v7().to_string(),
        seller_id: actors.seller.to_string(),
        seller_handle: "seller".to_owned(),
        title: format!("Lot {lot_number}"),
        parameters: Some(parameters),
        live_session_id: session.to_owned(),
        lot_number,
        auctioneer_id: floor.auctioneer.to_string(),
        ..pb::CreateAuctionRequest::default()
    }
}

async fn create_lot(
    bidding: &mut BiddingServiceClient<Channel>,
    actors: &Actors,
    floor: &Floor,
    session: &str,
    lot_number: u32,
) -> String {
    // A 5-minute countdown: no lot runs out while a test drives it.
    let request = lot_request(
        actors,
        floor,
        session,
        lot_number,
        live_parameters("10.00", 300),
    );
    bidding
        .create_auction(with_token(request, &actors.admin_token))
        .await
        .expect("create the lot")
        .into_inner()
        .state
        .expect("a state")
        .auction_id
}

fn lot(state: &pb::AuctionState) -> pb::LiveLotState {
    match &state.format_state {
        Some(pb::auction_state::FormatState::LiveLot(lot)) => lot.clone(),
        other => panic!("not a live lot: {other:?}"),
    }
}

fn open(auction_id: &str, request_id: &str, token: &str) -> tonic::Request<pb::OpenLotRequest> {
    with_token(
        pb::OpenLotRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
        },
        token,
    )
}

fn hammer(
    auction_id: &str,
    request_id: &str,
    expected_sequence: u64,
    token: &str,
) -> tonic::Request<pb::HammerLotRequest> {
    with_token(
        pb::HammerLotRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            expected_sequence,
        },
        token,
    )
}

fn reopen(auction_id: &str, request_id: &str, token: &str) -> tonic::Request<pb::ReopenLotRequest> {
    with_token(
        pb::ReopenLotRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            reason: "floor dispute".to_owned(),
        },
        token,
    )
}

fn bid(
    auction_id: &str,
    request_id: &str,
    amount: &str,
    token: &str,
) -> tonic::Request<pb::PlaceBidRequest> {
    with_token(
        pb::PlaceBidRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            amount: Some(usd(amount)),
        },
        token,
    )
}

fn absentee(
    auction_id: &str,
    request_id: &str,
    amount: &str,
    token: &str,
) -> tonic::Request<pb::PlaceAbsenteeBidRequest> {
    with_token(
        pb::PlaceAbsenteeBidRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            max_amount: Some(usd(amount)),
        },
        token,
    )
}

fn handle(reference: &Option<pb::BidderRef>) -> String {
    reference
        .as_ref()
        .map(|bidder| bidder.handle.clone())
        .unwrap_or_default()
}

async fn viewer(
    bidding: &mut BiddingServiceClient<Channel>,
    auction_id: &str,
    token: &str,
) -> pb::GetAuctionStateResponse {
    bidding
        .get_auction_state(with_token(
            pb::GetAuctionStateRequest {
                auction_id: auction_id.to_owned(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

// Proves invalid live parameters are INVALID_ARGUMENT with the contract's
// reasons, and a lot number is one auction's per session.
#[tokio::test]
async fn creating_lots_checks_their_parameters() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let actors = actors(&app);
    let floor = floor(&app);
    let mut bidding = client(&app).await;
    let session = Uuid::now_v7().to_string();
    let created = create_lot(&mut bidding, &actors, &floor, &session, 1).await;
    let state = state(&mut bidding, &created).await;
    assert_eq!(state.status, pb::AuctionStatus::Scheduled as i32);
    assert_eq!(state.format, pb::AuctionFormat::Live as i32);
    let live = lot(&state);
    assert_eq!(live.lot_state, pb::LotState::Pending as i32);
    assert_eq!(live.session_id, session);
    assert_eq!(live.lot_number, 1);
    assert_eq!(live.auctioneer_id, floor.auctioneer.to_string());
    assert_eq!(live.lot_countdown.unwrap().seconds, 300);
    assert_eq!(amount(&state.current_price), "10.00");

    let refused = |request: pb::CreateAuctionRequest| {
        let mut bidding = bidding.clone();
        let token = actors.admin_token.clone();
        async move {
            bidding
                .create_auction(with_token(request, &token))
                .await
                .unwrap_err()
        }
    };
    let cases = [
        (
            pb::CreateAuctionRequest {
                live_session_id: String::new(),
                ..lot_request(&actors, &floor, &session, 2, live_parameters("10.00", 60))
            },
            "PARAMETERS_INVALID",
        ),
        (
            pb::CreateAuctionRequest {
                lot_number: 0,
                ..lot_request(&actors, &floor, &session, 2, live_parameters("10.00", 60))
            },
            "PARAMETERS_INVALID",
        ),
        (
            pb::CreateAuctionRequest {
                auctioneer_id: "nobody".to_owned(),
                ..lot_request(&actors, &floor, &session, 2, live_parameters("10.00", 60))
            },
            "PARAMETERS_INVALID",
        ),
        // The countdown is 3 s - 5 min.
        (
            lot_request(&actors, &floor, &session, 2, live_parameters("10.00", 1)),
            "PARAMETERS_INVALID",
        ),
        (
            lot_request(&actors, &floor, &session, 2, live_parameters("0", 60)),
            "PARAMETERS_INVALID",
        ),
        // A live lot has no end time.
        (
            pb::CreateAuctionRequest {
                end_time: Some(at(Duration::from_secs(3_600), true)),
                ..lot_request(&actors, &floor, &session, 2, live_parameters("10.00", 60))
            },
            "SCHEDULE_INVALID",
        ),
        // Lot 1 of this session is taken.
        (
            lot_request(&actors, &floor, &session, 1, live_parameters("10.00", 60)),
            "PARAMETERS_INVALID",
        ),
    ];
    for (request, expected) in cases {
        let error = refused(request).await;
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert_eq!(reason(&error), expected, "{error:?}");
    }
    app.stop().await;
}

// Proves a whole session over the wire: absentee bids applied at opening,
// bids, fair warning, undo, expected_sequence conflicts, the provisional
// hammer and its reopen, finalisation when the next lot opens, a pass that
// ends UNSOLD, one open lot per session, who may drive a lot, and request
// id replays.
async fn a_session_of_lots(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let actors = actors(&app);
    let floor = floor(&app);
    let mut bidding = client(&app).await;
    let session = Uuid::now_v7().to_string();
    let first = create_lot(&mut bidding, &actors, &floor, &session, 1).await;
    let second = create_lot(&mut bidding, &actors, &floor, &session, 2).await;
    let third = create_lot(&mut bidding, &actors, &floor, &session, 3).await;

    // ListAuctions keeps to one live session (and one seller) when asked.
    let other_session = Uuid::now_v7().to_string();
    let elsewhere = create_lot(&mut bidding, &actors, &floor, &other_session, 1).await;
    let scheduled = state(&mut bidding, &first).await;
    let listing = |session: &str, seller: &str| pb::ListAuctionsRequest {
        statuses: vec![scheduled.status],
        live_session_id: session.to_owned(),
        seller_id: seller.to_owned(),
        page_size: 100,
        ..pb::ListAuctionsRequest::default()
    };
    let mut in_session = vec![first.clone(), second.clone(), third.clone()];
    in_session.sort();
    for (request, expected) in [
        (listing(&session, ""), in_session.clone()),
        (listing(&other_session, ""), vec![elsewhere.clone()]),
        (listing(&session, &scheduled.seller_id), in_session.clone()),
        (listing(&session, &Uuid::now_v7().to_string()), Vec::new()),
    ] {
        let mut listed: Vec<String> = bidding
            .list_auctions(request)
            .await
            .unwrap()
            .into_inner()
            .auctions
            .into_iter()
            .map(|listed| listed.auction_id)
            .collect();
        listed.sort();
        assert_eq!(listed, expected);
    }

    // Absentee bids while pending: secret, counted, the bidder's own shown
    // to them only.
    let placed = bidding
        .place_absentee_bid(absentee(&first, "abs-1", "40.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    let placed_bid = placed.bid.unwrap();
    assert_eq!(placed_bid.kind, pb::BidKind::Absentee as i32);
    assert_eq!(placed_bid.status, pb::BidStatus::Pending as i32);
    assert_eq!(amount(&placed_bid.max_amount), "40.00");
    assert_eq!(
        amount(&placed.viewer.unwrap().absentee_bid),
        "40.00",
        "the caller sees their own absentee maximum"
    );
    bidding
        .place_absentee_bid(absentee(&first, "abs-2", "30.00", &actors.bob_token))
        .await
        .unwrap();
    let pending = state(&mut bidding, &first).await;
    assert_eq!(lot(&pending).absentee_bid_count, 2);
    assert_eq!(pending.leader, None, "no leader shows before the lot opens");
    assert_eq!(amount(&pending.current_price), "10.00");
    let bob_view = viewer(&mut bidding, &first, &actors.bob_token).await;
    let bob_view = bob_view.viewer.unwrap();
    assert_eq!(bob_view.status, pb::BidStatus::Pending as i32);
    assert_eq!(amount(&bob_view.absentee_bid), "30.00");
    assert_eq!(bob_view.max_bid, None);
    let early = bidding
        .place_bid(bid(&first, "early", "50.00", &floor.carol_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "AUCTION_NOT_OPEN");

    // Only the lot's auctioneer (or an admin) drives it.
    let by_bidder = bidding
        .open_lot(open(&first, "open-x", &actors.bob_token))
        .await
        .unwrap_err();
    assert_eq!(by_bidder.code(), Code::PermissionDenied);
    assert_eq!(reason(&by_bidder), "ROLE_REQUIRED");
    let by_stranger = bidding
        .open_lot(open(&first, "open-y", &floor.other_auctioneer_token))
        .await
        .unwrap_err();
    assert_eq!(by_stranger.code(), Code::PermissionDenied);
    assert_eq!(reason(&by_stranger), "NOT_OWNER");

    // Opening applies the absentee bids: Alice leads at Bob's 30 + 1.
    let opened = bidding
        .open_lot(open(&first, "open-1", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner();
    let opened_state = opened.state.clone().unwrap();
    assert_eq!(opened_state.status, pb::AuctionStatus::Open as i32);
    assert_eq!(lot(&opened_state).lot_state, pb::LotState::Open as i32);
    assert!(lot(&opened_state).countdown_end_time.is_some());
    assert_eq!(amount(&opened_state.current_price), "31.00");
    assert_eq!(amount(&opened_state.minimum_next_bid), "32.00");
    let alice_handle = handle(&opened_state.leader);
    let alice_view = viewer(&mut bidding, &first, &actors.alice_token).await;
    assert!(alice_view.viewer.unwrap().is_leader);
    assert_eq!(handle(&alice_view.state.unwrap().leader), alice_handle);
    // A retry gets the original answer.
    let again = bidding
        .open_lot(open(&first, "open-1", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, opened);
    let late = bidding
        .place_absentee_bid(absentee(&first, "abs-3", "60.00", &floor.carol_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "LOT_NOT_PENDING");
    // One open lot per session.
    let second_open = bidding
        .open_lot(open(&second, "open-2a", &floor.auctioneer_token))
        .await
        .unwrap_err();
    assert_eq!(second_open.code(), Code::FailedPrecondition);
    assert_eq!(reason(&second_open), "LOT_STATE_INVALID");

    // Bids on the floor: Bob's 35 is answered by Alice's absentee maximum.
    let outbid = bidding
        .place_bid(bid(&first, "bid-1", "35.00", &actors.bob_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outbid.bid.unwrap().status, pb::BidStatus::Outbid as i32);
    assert_eq!(
        amount(&outbid.state.as_ref().unwrap().current_price),
        "36.00"
    );
    let carol = bidding
        .place_bid(bid(&first, "bid-2", "45.00", &floor.carol_token))
        .await
        .unwrap()
        .into_inner();
    let carol_state = carol.state.unwrap();
    assert!(carol.viewer.unwrap().is_leader);
    assert_ne!(handle(&carol_state.leader), alice_handle);
    // Alice's maximum stays secret to everyone else, in every state.
    assert_eq!(
        viewer(&mut bidding, &first, &actors.bob_token)
            .await
            .viewer
            .unwrap()
            .max_bid
            .map(|money| money.amount),
        Some("35.00".to_owned())
    );

    // A stale expected_sequence is a conflict, with the current sequence.
    let stale = bidding
        .call_fair_warning(with_token(
            pb::CallFairWarningRequest {
                request_id: "fw-stale".to_owned(),
                auction_id: first.clone(),
                expected_sequence: opened_state.sequence,
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "VERSION_CONFLICT");
    let warned = bidding
        .call_fair_warning(with_token(
            pb::CallFairWarningRequest {
                request_id: "fw-1".to_owned(),
                auction_id: first.clone(),
                expected_sequence: carol_state.sequence,
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(lot(&warned).lot_state, pb::LotState::FairWarning as i32);

    // Undo the last bid: Carol's; Alice leads again at 36.
    let undone = bidding
        .undo_last_bid(with_token(
            pb::UndoLastBidRequest {
                request_id: "undo-1".to_owned(),
                auction_id: first.clone(),
                expected_sequence: warned.sequence,
                reason: "phone line crossed".to_owned(),
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let undone_bid = undone.undone_bid.unwrap();
    assert_eq!(undone_bid.status, pb::BidStatus::Retracted as i32);
    assert_eq!(handle(&undone_bid.bidder), handle(&carol_state.leader));
    assert_eq!(amount(&undone_bid.amount), "45.00");
    let after_undo = undone.state.unwrap();
    assert_eq!(handle(&after_undo.leader), alice_handle);
    assert_eq!(amount(&after_undo.current_price), "36.00");
    // Only a new bid returns a fair-warned lot to OPEN.
    assert_eq!(lot(&after_undo).lot_state, pb::LotState::FairWarning as i32);

    // The hammer is provisional: HAMMERED, the auction still OPEN.
    let stale_hammer = bidding
        .hammer_lot(hammer(
            &first,
            "hammer-stale",
            warned.sequence,
            &floor.auctioneer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&stale_hammer), "VERSION_CONFLICT");
    let hammered = bidding
        .hammer_lot(hammer(
            &first,
            "hammer-1",
            after_undo.sequence,
            &floor.auctioneer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(hammered.status, pb::AuctionStatus::Open as i32);
    assert_eq!(lot(&hammered).lot_state, pb::LotState::Hammered as i32);
    assert!(lot(&hammered).finalize_time.is_some());
    let closed_to_bids = bidding
        .place_bid(bid(&first, "bid-3", "80.00", &floor.carol_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&closed_to_bids), "AUCTION_CLOSED");
    // A floor dispute: reopen while provisional, a new bid, hammer again.
    let reopened = bidding
        .reopen_lot(reopen(&first, "reopen-1", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(lot(&reopened).lot_state, pb::LotState::Open as i32);
    assert_eq!(lot(&reopened).finalize_time, None);
    bidding
        .place_bid(bid(&first, "bid-4", "50.00", &floor.carol_token))
        .await
        .unwrap();
    bidding
        .hammer_lot(hammer(&first, "hammer-2", 0, &floor.auctioneer_token))
        .await
        .unwrap();

    // Opening the next lot finalises the hammered one: CLOSED to Carol at
    // Alice's 40 + 1.
    let second_opened = bidding
        .open_lot(open(&second, "open-2", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(lot(&second_opened).lot_state, pb::LotState::Open as i32);
    let final_first = state(&mut bidding, &first).await;
    assert_eq!(final_first.status, pb::AuctionStatus::Closed as i32);
    let award = &final_first.result.as_ref().unwrap().awards[0];
    assert_eq!(handle(&award.winner), handle(&carol_state.leader));
    assert_eq!(amount(&award.unit_price), "41.00");
    let carol_view = viewer(&mut bidding, &first, &floor.carol_token).await;
    assert_eq!(carol_view.viewer.unwrap().status, pb::BidStatus::Won as i32);
    let too_late = bidding
        .reopen_lot(reopen(&first, "reopen-2", &floor.auctioneer_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_late), "LOT_STATE_INVALID");

    // Lot 2: nothing to undo, nothing to hammer; an admin passes it; it is
    // final (UNSOLD) once lot 3 opens.
    let nothing = bidding
        .undo_last_bid(with_token(
            pb::UndoLastBidRequest {
                request_id: "undo-2".to_owned(),
                auction_id: second.clone(),
                ..pb::UndoLastBidRequest::default()
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&nothing), "NOTHING_TO_UNDO");
    let no_leader = bidding
        .hammer_lot(hammer(&second, "hammer-3", 0, &floor.auctioneer_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&no_leader), "LOT_STATE_INVALID");
    let passed = bidding
        .pass_lot(with_token(
            pb::PassLotRequest {
                request_id: "pass-2".to_owned(),
                auction_id: second.clone(),
                expected_sequence: 0,
                reason: "no interest".to_owned(),
            },
            &actors.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(lot(&passed).lot_state, pb::LotState::Passed as i32);
    assert_eq!(passed.status, pb::AuctionStatus::Open as i32);
    bidding
        .open_lot(open(&third, "open-3", &floor.auctioneer_token))
        .await
        .unwrap();
    assert_eq!(
        state(&mut bidding, &second).await.status,
        pb::AuctionStatus::Unsold as i32
    );
    app.stop().await;
}

#[tokio::test]
async fn a_session_of_lots_sqlite() {
    a_session_of_lots(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_session_of_lots_postgres() {
    a_session_of_lots(Backend::Postgres).await;
}

// Proves a LotOpened replayed from the log (WatchAuction resuming from
// before the opening) carries the price, leader and minimum next bid the lot
// opened at, not where floor bids have taken the lot since.
async fn a_replayed_opening_shows_the_opening_price(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let actors = actors(&app);
    let floor = floor(&app);
    let mut bidding = client(&app).await;
    let session = Uuid::now_v7().to_string();
    let lot_id = create_lot(&mut bidding, &actors, &floor, &session, 1).await;
    bidding
        .place_absentee_bid(absentee(&lot_id, "abs-a", "40.00", &actors.alice_token))
        .await
        .unwrap();
    bidding
        .place_absentee_bid(absentee(&lot_id, "abs-b", "30.00", &actors.bob_token))
        .await
        .unwrap();
    let pending = state(&mut bidding, &lot_id).await;
    // Alice's 40 against Bob's 30: the lot opens at 31 with Alice leading.
    let opened = bidding
        .open_lot(open(&lot_id, "open-1", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(amount(&opened.current_price), "31.00");
    assert_eq!(amount(&opened.minimum_next_bid), "32.00");
    let alice_handle = handle(&opened.leader);
    // Carol outbids the book on the floor: the lot has moved on.
    bidding
        .place_bid(bid(&lot_id, "bid-c", "50.00", &floor.carol_token))
        .await
        .unwrap();
    let later = state(&mut bidding, &lot_id).await;
    assert_ne!(amount(&later.current_price), "31.00");
    assert_ne!(handle(&later.leader), alice_handle);

    let mut watch = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: lot_id.clone(),
            resume_after_sequence: pending.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    let lot_opened = loop {
        match next_auction_event(&mut watch).await {
            pb::auction_event::Kind::LotOpened(lot_opened) => break lot_opened,
            pb::auction_event::Kind::Opened(_) => {}
            other => panic!("the opening first, got {other:?}"),
        }
    };
    assert_eq!(amount(&lot_opened.current_price), "31.00");
    assert_eq!(amount(&lot_opened.minimum_next_bid), "32.00");
    assert_eq!(handle(&lot_opened.leader), alice_handle);
    assert_eq!(lot_opened.lot_number, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_opening_shows_the_opening_price_sqlite() {
    a_replayed_opening_shows_the_opening_price(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_replayed_opening_shows_the_opening_price_postgres() {
    a_replayed_opening_shows_the_opening_price(Backend::Postgres).await;
}

/// Waits (bounded) for the auction's terminal event on its watch stream.
async fn terminal_event(
    bidding: &mut BiddingServiceClient<Channel>,
    auction_id: &str,
    after: u64,
) -> pb::AuctionEvent {
    let mut stream = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: auction_id.to_owned(),
            resume_after_sequence: after,
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the lot finalises within 20 s")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::watch_auction_response::Message::Event(event)) = message.message
            && matches!(
                event.kind,
                Some(pb::auction_event::Kind::Closed(_) | pb::auction_event::Kind::Unsold(_))
            )
        {
            return event;
        }
    }
}

// Proves a hammered lot becomes final by its own timer when no next lot
// opens, and that the timer survives a restart (re-armed from the log).
#[tokio::test]
async fn the_finalise_timer_survives_a_restart() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.bidding.lot_finalize_ms = 2_000;
    })
    .await;
    let config = (*app.config).clone();
    let actors = actors(&app);
    let floor = floor(&app);
    let mut bidding = client(&app).await;
    let session = Uuid::now_v7().to_string();
    let sold = create_lot(&mut bidding, &actors, &floor, &session, 1).await;
    let passed = create_lot(&mut bidding, &actors, &floor, &session, 2).await;
    bidding
        .open_lot(open(&sold, "open-1", &floor.auctioneer_token))
        .await
        .unwrap();
    bidding
        .place_bid(bid(&sold, "bid-1", "12.00", &actors.alice_token))
        .await
        .unwrap();
    let hammered = bidding
        .hammer_lot(hammer(&sold, "hammer-1", 0, &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(lot(&hammered).lot_state, pb::LotState::Hammered as i32);
    let data = app.stop().await;

    // After the restart the timer is re-armed from the log and fires.
    let app = spawn_with(config, data).await;
    let mut bidding = client(&app).await;
    let closed = terminal_event(&mut bidding, &sold, hammered.sequence).await;
    assert!(matches!(
        closed.kind,
        Some(pb::auction_event::Kind::Closed(_))
    ));
    let final_state = state(&mut bidding, &sold).await;
    assert_eq!(final_state.status, pb::AuctionStatus::Closed as i32);
    assert_eq!(
        amount(&final_state.result.unwrap().awards[0].unit_price),
        "10.00",
        "a lone bidder pays the starting price"
    );
    // A pass by the timer ends UNSOLD with the reason PASSED.
    bidding
        .open_lot(open(&passed, "open-2", &floor.auctioneer_token))
        .await
        .unwrap();
    let passed_state = bidding
        .pass_lot(with_token(
            pb::PassLotRequest {
                request_id: "pass-2".to_owned(),
                auction_id: passed.clone(),
                ..pb::PassLotRequest::default()
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    let unsold = terminal_event(&mut bidding, &passed, passed_state.sequence).await;
    match unsold.kind {
        Some(pb::auction_event::Kind::Unsold(unsold)) => {
            assert_eq!(unsold.reason, pb::UnsoldReason::Passed as i32);
        }
        other => panic!("expected unsold, got {other:?}"),
    }
    app.stop().await;
}

type ActivityStream = tonic::Streaming<pb::WatchMyActivityResponse>;

/// A WatchMyActivity stream resumed after the user's row `after`; from 0,
/// its first message (the snapshot) is checked to be empty and skipped.
async fn activity(
    bidding: &mut BiddingServiceClient<Channel>,
    token: &str,
    after: u64,
) -> ActivityStream {
    let mut stream = bidding
        .watch_my_activity(with_token(
            pb::WatchMyActivityRequest {
                resume_after_sequence: after,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    if after == 0 {
        match next_activity_message(&mut stream).await {
            pb::watch_my_activity_response::Message::Snapshot(snapshot) => {
                assert!(snapshot.positions.is_empty(), "{snapshot:?}");
            }
            other => panic!("a snapshot first, got {other:?}"),
        }
    }
    stream
}

async fn next_activity_message(
    stream: &mut ActivityStream,
) -> pb::watch_my_activity_response::Message {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("no error")
        .message
        .expect("a message")
}

/// The next `count` activity rows' types and the position each shows.
async fn activity_rows(
    stream: &mut ActivityStream,
    count: usize,
) -> Vec<(pb::ActivityType, pb::BidStatus)> {
    let mut rows = Vec::new();
    while rows.len() < count {
        match next_activity_message(stream).await {
            pb::watch_my_activity_response::Message::Event(event) => rows.push((
                event.activity_type(),
                event
                    .viewer
                    .as_ref()
                    .map_or(pb::BidStatus::Unspecified, |viewer| viewer.status()),
            )),
            pb::watch_my_activity_response::Message::Heartbeat(_) => {}
            pb::watch_my_activity_response::Message::Snapshot(snapshot) => {
                panic!("unexpected snapshot {snapshot:?}")
            }
        }
    }
    rows
}

/// The next event with a kind on a WatchAuction stream (bounded).
async fn next_auction_event(
    stream: &mut tonic::Streaming<pb::WatchAuctionResponse>,
) -> pb::auction_event::Kind {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::watch_auction_response::Message::Event(pb::AuctionEvent {
            kind: Some(kind),
            ..
        })) = message.message
        {
            return kind;
        }
    }
}

/// Polls (bounded) a user's notifications until one of `kind` shows.
async fn await_notification(app: &TestApp, token: &str, kind: pb::NotificationType) {
    use auction_proto::v1::notification_service_client::NotificationServiceClient;
    let mut notifications = NotificationServiceClient::new(app.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = notifications
            .list_notifications(with_token(
                pb::ListNotificationsRequest {
                    types: vec![kind as i32],
                    ..pb::ListNotificationsRequest::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        if !listed.notifications.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind:?} notification within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn notification_types(app: &TestApp, token: &str) -> Vec<pb::NotificationType> {
    use auction_proto::v1::notification_service_client::NotificationServiceClient;
    let mut notifications = NotificationServiceClient::new(app.channel().await);
    notifications
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                page_size: 100,
                ..pb::ListNotificationsRequest::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications
        .iter()
        .map(|notification| notification.notification_type())
        .collect()
}

// Proves the absentee book over the wire: absentee bids reach watchers
// (WatchAuction, WatchMarket) only as "an absentee bid was received", outbid
// nobody (no OUTBID notification), may be replaced up or down while the lot
// is pending (not below the starting price, not after the opening), survive
// a restart, and are applied at OpenLot (whose event names the session and
// lot number); live bids count like English ones, and the per-user index
// gets BID_PLACED, LOT_OPENED, OUTBID, WINNING, BID_RETRACTED (undo) and
// WON/LOST when the hammer becomes final.
#[tokio::test]
async fn the_absentee_book_stays_private_until_the_lot_opens() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let config = (*app.config).clone();
    let actors = actors(&app);
    let floor = floor(&app);
    let mut bidding = client(&app).await;
    let session = Uuid::now_v7().to_string();
    let first = create_lot(&mut bidding, &actors, &floor, &session, 1).await;
    let second = create_lot(&mut bidding, &actors, &floor, &session, 2).await;
    let mut watch = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: first.clone(),
            resume_after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut market = bidding
        .watch_market(with_token(
            pb::WatchMarketRequest {
                formats: vec![pb::AuctionFormat::Live as i32],
                ..pb::WatchMarketRequest::default()
            },
            &floor.carol_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut alice_activity = activity(&mut bidding, &actors.alice_token, 0).await;
    let mut bob_activity = activity(&mut bidding, &actors.bob_token, 0).await;

    // Alice 40, then Bob 35: under the old book Bob's bid outbid Alice.
    let alice_first = bidding
        .place_absentee_bid(absentee(&first, "abs-a1", "40.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        alice_first.bid.unwrap().status,
        pb::BidStatus::Pending as i32
    );
    bidding
        .place_absentee_bid(absentee(&first, "abs-b1", "35.00", &actors.bob_token))
        .await
        .unwrap();
    // Alice lowers hers to 30: a replacement, not a second bid.
    let replaced = bidding
        .place_absentee_bid(absentee(&first, "abs-a2", "30.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    let replaced_viewer = replaced.viewer.clone().unwrap();
    assert_eq!(amount(&replaced_viewer.absentee_bid), "30.00");
    assert_eq!(replaced_viewer.status, pb::BidStatus::Pending as i32);
    let replaced_state = replaced.state.clone().unwrap();
    assert_eq!(lot(&replaced_state).absentee_bid_count, 2);
    // A retry gets the original answer; the same id with another amount is
    // another request.
    let retried = bidding
        .place_absentee_bid(absentee(&first, "abs-a2", "30.00", &actors.alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, replaced);
    let reused = bidding
        .place_absentee_bid(absentee(&first, "abs-a2", "31.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    let too_low = bidding
        .place_absentee_bid(absentee(&first, "abs-a3", "9.99", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(too_low.code(), Code::FailedPrecondition);
    assert_eq!(reason(&too_low), "BID_BELOW_MINIMUM");

    // Watchers learn only that absentee bids came in: a count, no amount,
    // no bidder, no price, no leader.
    for expected in [1, 2, 2] {
        match next_auction_event(&mut watch).await {
            pb::auction_event::Kind::AbsenteeBidReceived(received) => {
                assert_eq!(received.absentee_bid_count, expected);
            }
            other => panic!("only absentee receipts before the opening, got {other:?}"),
        }
    }
    for _ in 0..3 {
        let event = next_market_item(&mut market).await;
        assert_eq!(event.event_type(), pb::MarketEventType::AbsenteeBidReceived);
        let state = event.state.unwrap();
        assert_eq!((state.leader, state.bid_count), (None, 0));
        assert_eq!(amount(&state.current_price), "10.00");
    }
    let pending = state(&mut bidding, &first).await;
    assert_eq!(pending.leader, None);
    assert_eq!((pending.bid_count, pending.bidder_count), (0, 0));
    assert_eq!(lot(&pending).absentee_bid_count, 2);
    // Each absentee bid is its bidder's own news: BID_PLACED, pending.
    assert_eq!(
        activity_rows(&mut alice_activity, 2).await,
        vec![
            (pb::ActivityType::BidPlaced, pb::BidStatus::Pending),
            (pb::ActivityType::BidPlaced, pb::BidStatus::Pending)
        ]
    );
    assert_eq!(
        activity_rows(&mut bob_activity, 1).await,
        vec![(pb::ActivityType::BidPlaced, pb::BidStatus::Pending)]
    );
    // The bid list of a pending lot shows each bidder their own newest
    // absentee bid (the replaced one is gone) and nobody anyone else's.
    let alice_list = list_bids(&mut bidding, &first, &actors.alice_token).await;
    assert_eq!(
        alice_list
            .iter()
            .map(|listed| (amount(&listed.max_amount), listed.status()))
            .collect::<Vec<_>>(),
        vec![("30.00".to_owned(), pb::BidStatus::Pending)]
    );
    assert!(
        list_bids(&mut bidding, &first, &floor.carol_token)
            .await
            .is_empty()
    );
    drop((watch, market, alice_activity, bob_activity));

    // The book survives a restart: rebuilt from the log.
    let data = app.stop().await;
    let app = spawn_with(config, data).await;
    let mut bidding = client(&app).await;
    let restarted = viewer(&mut bidding, &first, &actors.alice_token).await;
    assert_eq!(
        amount(&restarted.viewer.unwrap().absentee_bid),
        "30.00",
        "the replacement, after the restart"
    );
    assert_eq!(lot(&restarted.state.unwrap()).absentee_bid_count, 2);
    let mut watch = bidding
        .watch_auction(pb::WatchAuctionRequest {
            auction_id: first.clone(),
            resume_after_sequence: pending.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    let mut alice_activity = activity(&mut bidding, &actors.alice_token, 2).await;
    let mut bob_activity = activity(&mut bidding, &actors.bob_token, 1).await;
    let mut carol_activity = activity(&mut bidding, &floor.carol_token, 0).await;

    // Opening applies the book: Bob's 35 against Alice's 30 leads at 31.
    let opened = bidding
        .open_lot(open(&first, "open-1", &floor.auctioneer_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(amount(&opened.current_price), "31.00");
    assert_eq!((opened.bid_count, opened.bidder_count), (2, 2));
    let bob_handle = handle(&opened.leader);
    let bob_view = viewer(&mut bidding, &first, &actors.bob_token).await;
    assert!(bob_view.viewer.unwrap().is_leader);
    let lot_opened = loop {
        match next_auction_event(&mut watch).await {
            pb::auction_event::Kind::LotOpened(lot_opened) => break lot_opened,
            pb::auction_event::Kind::Opened(_) => {}
            other => panic!("the opening, got {other:?}"),
        }
    };
    assert_eq!(lot_opened.session_id, session);
    assert_eq!(lot_opened.lot_number, 1);
    assert_eq!(amount(&lot_opened.current_price), "31.00");
    assert_eq!(handle(&lot_opened.leader), bob_handle);
    // Once open, everyone sees both absentee bids: Bob's at the price it
    // leads at, Alice's beaten one at the amount it reached; no maximums.
    let public_list = list_bids(&mut bidding, &first, &floor.carol_token).await;
    assert_eq!(
        public_list
            .iter()
            .map(|listed| (
                amount(&listed.amount),
                listed.kind(),
                listed.status(),
                listed.max_amount.is_none()
            ))
            .collect::<Vec<_>>(),
        vec![
            (
                "30.00".to_owned(),
                pb::BidKind::Absentee,
                pb::BidStatus::Outbid,
                true
            ),
            (
                "31.00".to_owned(),
                pb::BidKind::Absentee,
                pb::BidStatus::Winning,
                true
            ),
        ]
    );
    let late = bidding
        .place_absentee_bid(absentee(&first, "abs-a4", "50.00", &actors.alice_token))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "LOT_NOT_PENDING");
    assert_eq!(
        activity_rows(&mut alice_activity, 1).await,
        vec![(pb::ActivityType::LotOpened, pb::BidStatus::Outbid)]
    );
    assert_eq!(
        activity_rows(&mut bob_activity, 1).await,
        vec![(pb::ActivityType::LotOpened, pb::BidStatus::Winning)]
    );

    // Carol outbids Bob on the floor; the auctioneer undoes her bid.
    let carol = bidding
        .place_bid(bid(&first, "bid-c1", "50.00", &floor.carol_token))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(amount(&carol.current_price), "36.00");
    assert_eq!((carol.bid_count, carol.bidder_count), (3, 3));
    let undone = bidding
        .undo_last_bid(with_token(
            pb::UndoLastBidRequest {
                request_id: "undo-1".to_owned(),
                auction_id: first.clone(),
                expected_sequence: carol.sequence,
                reason: "wrong paddle".to_owned(),
            },
            &floor.auctioneer_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!((undone.bid_count, undone.bidder_count), (2, 2));
    assert_eq!(handle(&undone.leader), bob_handle);
    assert_eq!(
        activity_rows(&mut carol_activity, 2).await,
        vec![
            (pb::ActivityType::BidPlaced, pb::BidStatus::Winning),
            (pb::ActivityType::BidRetracted, pb::BidStatus::Retracted)
        ]
    );
    assert_eq!(
        activity_rows(&mut bob_activity, 2).await,
        vec![
            (pb::ActivityType::Outbid, pb::BidStatus::Outbid),
            (pb::ActivityType::Winning, pb::BidStatus::Winning)
        ]
    );

    // Bob raises his own maximum on the floor while he leads: the price
    // stays, and his absentee row still shows the price, never its 35.00
    // maximum (which stays secret).
    let raised = bidding
        .set_max_bid(with_token(
            pb::SetMaxBidRequest {
                request_id: "max-b1".to_owned(),
                auction_id: first.clone(),
                max_amount: Some(usd("60.00")),
            },
            &actors.bob_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(handle(&raised.leader), bob_handle);
    assert_eq!(
        activity_rows(&mut bob_activity, 1).await,
        vec![(pb::ActivityType::BidPlaced, pb::BidStatus::Winning)]
    );
    let price = amount(&raised.current_price);
    assert_ne!(price, "35.00");
    let absentee_rows: Vec<String> = list_bids(&mut bidding, &first, &floor.carol_token)
        .await
        .iter()
        .filter(|listed| {
            listed.kind() == pb::BidKind::Absentee && handle(&listed.bidder) == bob_handle
        })
        .map(|listed| amount(&listed.amount))
        .collect();
    assert_eq!(absentee_rows, vec![price]);

    // The hammer becomes final when the next lot opens: WON and LOST.
    bidding
        .hammer_lot(hammer(&first, "hammer-1", 0, &floor.auctioneer_token))
        .await
        .unwrap();
    bidding
        .open_lot(open(&second, "open-2", &floor.auctioneer_token))
        .await
        .unwrap();
    assert_eq!(
        state(&mut bidding, &first).await.status,
        pb::AuctionStatus::Closed as i32
    );
    assert_eq!(
        activity_rows(&mut bob_activity, 1).await,
        vec![(pb::ActivityType::Won, pb::BidStatus::Won)]
    );
    assert_eq!(
        activity_rows(&mut alice_activity, 1).await,
        vec![(pb::ActivityType::Lost, pb::BidStatus::Lost)]
    );

    // Carol's floor bid outbid Bob, the first OUTBID of this lot; once it
    // is delivered every earlier bus event was planned, and the absentee
    // bids sent nobody OUTBID.
    await_notification(&app, &actors.bob_token, pb::NotificationType::Outbid).await;
    assert!(
        !notification_types(&app, &actors.alice_token)
            .await
            .contains(&pb::NotificationType::Outbid),
        "an absentee bid outbids nobody"
    );
    app.stop().await;
}

async fn next_market_item(
    stream: &mut tonic::Streaming<pb::WatchMarketResponse>,
) -> pb::MarketEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a market event within 10 s")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::watch_market_response::Message::Event(event)) = message.message {
            return event;
        }
    }
}

async fn list_bids(
    bidding: &mut BiddingServiceClient<Channel>,
    auction_id: &str,
    token: &str,
) -> Vec<pb::Bid> {
    bidding
        .list_bids(with_token(
            pb::ListBidsRequest {
                auction_id: auction_id.to_owned(),
                ..pb::ListBidsRequest::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .bids
}
