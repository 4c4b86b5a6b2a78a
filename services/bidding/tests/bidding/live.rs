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
