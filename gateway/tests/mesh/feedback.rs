//! Issue 7 over the real wire: feedback after a completed sale. Orders
//! reach the user service as the payment service's `BusOrderEvent`s on the
//! app's own bus (published here, or made by the real payment service from
//! a real auction); LeaveFeedback, ListFeedback and GetReputation are
//! called through the gateway, on SQLite and PostgreSQL.

use std::time::{Duration, SystemTime};

use auction_platform::auth::Role;
use auction_platform::bus::{self, Envelope, TOPIC_ORDER};
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_proto::v1::payment_service_client::PaymentServiceClient;
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_proto::v1::{FeedbackRating, FeedbackSide};
use auction_testkit::{Backend, TestApp, TestUser, spawn_app_with, with_token};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// The longest any test waits for an asynchronous change.
const WAIT: Duration = Duration::from_secs(30);
const DAY_MS: i64 = 24 * 3_600 * 1_000;

fn now_ms() -> i64 {
    auction_platform::now_ms()
}

fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn is_replay<T>(response: &tonic::Response<T>) -> bool {
    response
        .metadata()
        .get("auction-idempotent-replay")
        .is_some_and(|value| value == "true")
}

/// The mesh with the gateway's per-user rate limit out of the way: the
/// tests poll from one account while the bus catches up.
async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |config| {
        config.gateway.user_requests_per_second = 100_000;
        config.gateway.user_burst = 100_000;
    })
    .await
}

async fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel().await)
}

/// An order between two users, as the payment service names it on the bus.
#[derive(Debug, Clone, Copy)]
struct Order {
    id: Uuid,
    auction: Uuid,
    buyer: Uuid,
    seller: Uuid,
}

impl Order {
    fn new(buyer: Uuid, seller: Uuid) -> Self {
        Self {
            id: Uuid::now_v7(),
            auction: Uuid::now_v7(),
            buyer,
            seller,
        }
    }

    /// What the payment service publishes when `kind` happens at `at_ms`.
    fn event(&self, kind: pb::bus_order_event::Kind, at_ms: i64) -> Envelope {
        let payload = pb::BusOrderEvent {
            order_id: self.id.to_string(),
            auction_id: self.auction.to_string(),
            buyer_id: self.buyer.to_string(),
            seller_id: self.seller.to_string(),
            event_time: Some(bus::timestamp_from_ms(at_ms)),
            title: "A brass lamp".to_owned(),
            kind: Some(kind),
        };
        Envelope::new("payment", TOPIC_ORDER, self.id.to_string(), at_ms, &payload)
    }

    fn created(&self, at_ms: i64) -> Envelope {
        self.event(
            pb::bus_order_event::Kind::Created(pb::BusOrderCreated::default()),
            at_ms,
        )
    }

    fn paid(&self, at_ms: i64) -> Envelope {
        self.event(
            pb::bus_order_event::Kind::Paid(pb::BusOrderPaid::default()),
            at_ms,
        )
    }

    fn shipped(&self, at_ms: i64) -> Envelope {
        self.event(
            pb::bus_order_event::Kind::Shipped(pb::BusOrderShipped::default()),
            at_ms,
        )
    }
}

async fn publish(app: &TestApp, envelopes: &[Envelope]) {
    bus::for_process(&app.config)
        .unwrap()
        .publish(envelopes)
        .await
        .unwrap();
}

fn leave_request(
    request_id: &str,
    order_id: Uuid,
    rating: FeedbackRating,
) -> pb::LeaveFeedbackRequest {
    pb::LeaveFeedbackRequest {
        request_id: request_id.to_owned(),
        order_id: order_id.to_string(),
        rating: rating as i32,
        comment: String::new(),
    }
}

async fn leave(
    app: &TestApp,
    token: &str,
    request: pb::LeaveFeedbackRequest,
) -> Result<tonic::Response<pb::LeaveFeedbackResponse>, tonic::Status> {
    users(app)
        .await
        .leave_feedback(with_token(request, token))
        .await
}

/// Calls LeaveFeedback until the answer is no longer one of `waiting_for`
/// (the bus has not delivered the order, or its payment, yet), bounded by
/// [`WAIT`]. Refusals are not stored, so retrying one request id is fine.
async fn leave_once_delivered(
    app: &TestApp,
    token: &str,
    request: &pb::LeaveFeedbackRequest,
    waiting_for: &[&str],
) -> Result<tonic::Response<pb::LeaveFeedbackResponse>, tonic::Status> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match leave(app, token, request.clone()).await {
            Err(status)
                if waiting_for.contains(&reason(&status).as_str())
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Waits until the user service has consumed every order event published
/// before this call: a marker order, created and paid, is published after
/// them and waited for (the bus hands one group a topic's events in order).
async fn wait_consumed(app: &TestApp, buyer: &TestUser, seller: Uuid) {
    let marker = Order::new(buyer.user_id, seller);
    publish(app, &[marker.created(now_ms()), marker.paid(now_ms())]).await;
    leave_once_delivered(
        app,
        &buyer.access_token,
        &leave_request(
            &format!("marker-{}", marker.id),
            marker.id,
            FeedbackRating::Neutral,
        ),
        &["ORDER_NOT_FOUND", "FEEDBACK_NOT_ALLOWED"],
    )
    .await
    .expect("the marker order is consumed");
}

async fn reputation(app: &TestApp, user: Uuid) -> pb::GetReputationResponse {
    users(app)
        .await
        .get_reputation(pb::GetReputationRequest {
            user_id: user.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn counts(reputation: &Option<pb::Reputation>) -> (u32, u32, u32) {
    let reputation = reputation.as_ref().unwrap();
    (
        reputation.positive_count,
        reputation.neutral_count,
        reputation.negative_count,
    )
}

async fn leave_feedback_rules(backend: Backend) {
    let app = app(backend).await;
    let seller = app.register_and_login("fb_seller").await;
    let buyer = app.register_and_login("fb_buyer").await;
    let stranger = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    let order = Order::new(buyer.user_id, seller.user_id);

    // Created but not paid: known to its parties, not yet open to feedback.
    publish(&app, &[order.created(now_ms() - 3_600_000)]).await;
    let early = leave_request("buyer-early", order.id, FeedbackRating::Positive);
    let unpaid = leave_once_delivered(&app, &buyer.access_token, &early, &["ORDER_NOT_FOUND"])
        .await
        .unwrap_err();
    assert_eq!(unpaid.code(), Code::FailedPrecondition);
    assert_eq!(reason(&unpaid), "FEEDBACK_NOT_ALLOWED");
    // Others' orders, and unknown ones, do not exist for the caller.
    for (token, order_id) in [(&stranger, order.id), (&buyer.access_token, Uuid::now_v7())] {
        let missing = leave(
            &app,
            token,
            leave_request("probe", order_id, FeedbackRating::Negative),
        )
        .await
        .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(reason(&missing), "ORDER_NOT_FOUND");
    }

    // Paid (the Created delivered again changes nothing): the buyer rates the seller.
    publish(
        &app,
        &[order.created(now_ms() - 3_600_000), order.paid(now_ms())],
    )
    .await;
    let mut first = leave_request("buyer-1", order.id, FeedbackRating::Positive);
    first.comment = "Fast shipping, as described.".to_owned();
    let left = leave_once_delivered(&app, &buyer.access_token, &first, &["FEEDBACK_NOT_ALLOWED"])
        .await
        .unwrap();
    assert!(!is_replay(&left));
    let feedback = left.into_inner().feedback.unwrap();
    assert_eq!(feedback.order_id, order.id.to_string());
    assert_eq!(feedback.auction_id, order.auction.to_string());
    assert_eq!(feedback.author_user_id, buyer.user_id.to_string());
    assert_eq!(feedback.author_handle, "fb_buyer");
    assert_eq!(feedback.subject_user_id, seller.user_id.to_string());
    assert_eq!(feedback.side, FeedbackSide::FromBuyer as i32);
    assert_eq!(feedback.rating, FeedbackRating::Positive as i32);
    assert_eq!(feedback.comment, "Fast shipping, as described.");
    assert!(feedback.feedback_id.parse::<Uuid>().is_ok());

    // The same request again is a replay of the stored answer.
    let again = leave(&app, &buyer.access_token, first.clone())
        .await
        .unwrap();
    assert!(is_replay(&again));
    assert_eq!(again.into_inner().feedback.unwrap(), feedback);
    // The same request id with other content is refused.
    let mut changed = first.clone();
    changed.comment = "Changed my mind.".to_owned();
    let reused = leave(&app, &buyer.access_token, changed).await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    // One feedback per side per order.
    let twice = leave(
        &app,
        &buyer.access_token,
        leave_request("buyer-2", order.id, FeedbackRating::Negative),
    )
    .await
    .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert_eq!(reason(&twice), "FEEDBACK_EXISTS");

    // The seller's side is its own: they rate the buyer.
    let from_seller = leave(
        &app,
        &seller.access_token,
        leave_request("seller-1", order.id, FeedbackRating::Negative),
    )
    .await
    .unwrap()
    .into_inner()
    .feedback
    .unwrap();
    assert_eq!(from_seller.side, FeedbackSide::FromSeller as i32);
    assert_eq!(from_seller.subject_user_id, buyer.user_id.to_string());
    assert_eq!(from_seller.author_handle, "fb_seller");

    // Validation, before anything else.
    let mut long = leave_request("long", order.id, FeedbackRating::Neutral);
    long.comment = "x".repeat(501);
    for (request, expected) in [
        (
            leave_request("unrated", order.id, FeedbackRating::Unspecified),
            "VALIDATION_FAILED",
        ),
        (long, "VALIDATION_FAILED"),
        (
            leave_request("bad id!", order.id, FeedbackRating::Positive),
            "REQUEST_ID_INVALID",
        ),
    ] {
        let refused = leave(&app, &buyer.access_token, request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(reason(&refused), expected);
    }
    // Anonymous callers and partner API keys cannot leave feedback.
    let anonymous = users(&app)
        .await
        .leave_feedback(leave_request("anon", order.id, FeedbackRating::Positive))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let key = users(&app)
        .await
        .create_api_key(with_token(
            pb::CreateApiKeyRequest {
                request_id: "key".to_owned(),
                name: "partner".to_owned(),
                scopes: vec![pb::ApiKeyScope::Bid as i32],
                expire_time: None,
            },
            &buyer.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut with_key =
        tonic::Request::new(leave_request("key", order.id, FeedbackRating::Positive));
    with_key
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    let partner = users(&app)
        .await
        .leave_feedback(with_key)
        .await
        .unwrap_err();
    assert_eq!(partner.code(), Code::Unauthenticated);
    assert_eq!(reason(&partner), "TOKEN_MISSING");

    // Reputation counts both.
    let of_seller = reputation(&app, seller.user_id).await;
    assert_eq!(counts(&of_seller.as_seller), (1, 0, 0));
    assert_eq!(counts(&of_seller.as_buyer), (0, 0, 0));
    assert_eq!(of_seller.overall.unwrap().positive_bps, 10_000);
    let of_buyer = reputation(&app, buyer.user_id).await;
    assert_eq!(counts(&of_buyer.as_buyer), (0, 0, 1));
    assert_eq!(of_buyer.overall.unwrap().lifetime_score, -1);
    app.stop().await;
}

// Proves LeaveFeedback's rules on SQLite: unknown or others' orders are
// NOT_FOUND, unpaid ones FAILED_PRECONDITION, one feedback per side with
// the side and subject from the caller's role, replays by request id, and
// GetReputation counting the result.
#[tokio::test]
async fn leave_feedback_rules_sqlite() {
    leave_feedback_rules(Backend::Sqlite).await;
}

// Proves LeaveFeedback's rules on PostgreSQL (as on SQLite).
#[tokio::test]
async fn leave_feedback_rules_postgres() {
    leave_feedback_rules(Backend::Postgres).await;
}

// Proves the lifetime score counts at most one feedback per counterpart per
// calendar week (that counterpart's first of the week), while the 12-month
// counts count every one.
#[tokio::test]
async fn lifetime_score_counts_one_feedback_per_counterpart_per_week() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        lifetime_score_weekly(backend).await;
    }
}

async fn lifetime_score_weekly(backend: Backend) {
    let app = app(backend).await;
    let seller = app.register_and_login("weekly_seller").await;
    let regular = app.register_and_login("weekly_regular").await;
    let other = app.register_and_login("weekly_other").await;
    let mut left_at = Vec::new();
    for (buyer, rating) in [
        (&regular, FeedbackRating::Positive),
        (&regular, FeedbackRating::Negative),
        (&regular, FeedbackRating::Negative),
        (&other, FeedbackRating::Positive),
    ] {
        let order = Order::new(buyer.user_id, seller.user_id);
        publish(
            &app,
            &[order.created(now_ms() - 3_600_000), order.paid(now_ms())],
        )
        .await;
        let request = leave_request(&format!("weekly-{}", order.id), order.id, rating);
        let feedback = leave_once_delivered(
            &app,
            &buyer.access_token,
            &request,
            &["ORDER_NOT_FOUND", "FEEDBACK_NOT_ALLOWED"],
        )
        .await
        .unwrap()
        .into_inner()
        .feedback
        .unwrap();
        left_at.push(feedback.create_time.unwrap().seconds);
    }
    let of_seller = reputation(&app, seller.user_id).await;
    assert_eq!(counts(&of_seller.as_seller), (2, 0, 2));
    // Calendar weeks start on Monday 00:00 UTC; the epoch was a Thursday.
    let week = |seconds: i64| (seconds + 3 * 86_400) / (7 * 86_400);
    let expected = if week(left_at[0]) == week(left_at[2]) {
        // The regular buyer's first of the week (+1) and the other's (+1);
        // every feedback counted would give 2 - 2 = 0.
        2
    } else {
        // The run crossed Monday 00:00 UTC between two of them: count the
        // regular buyer's weeks by hand.
        let mut firsts = std::collections::BTreeMap::new();
        for (index, seconds) in left_at[..3].iter().enumerate() {
            firsts.entry(week(*seconds)).or_insert(index);
        }
        firsts
            .values()
            .map(|index| if *index == 0 { 1 } else { -1 })
            .sum::<i64>()
            + 1
    };
    assert_eq!(of_seller.as_seller.unwrap().lifetime_score, expected);
    assert_eq!(of_seller.overall.unwrap().lifetime_score, expected);
    app.stop().await;
}

// Proves the order facts do not depend on delivery order or count: a Paid
// before its Created yields a paid order whose age is the Created's, so
// feedback is refused 61 days after creation and allowed 59 days after;
// any event after payment (here Shipped) also proves payment; redelivered
// events change nothing.
#[tokio::test]
async fn order_facts_are_order_independent_and_idempotent() {
    let app = app(Backend::Sqlite).await;
    let seller = app.register_and_login("fbo_seller").await;
    let buyer = app.register_and_login("fbo_buyer").await;
    let now = now_ms();
    let too_old = Order::new(buyer.user_id, seller.user_id);
    let recent = Order::new(buyer.user_id, seller.user_id);
    let shipped_only = Order::new(buyer.user_id, seller.user_id);
    let paid_late = too_old.paid(now - DAY_MS);
    publish(
        &app,
        &[
            paid_late.clone(),
            too_old.created(now - 61 * DAY_MS),
            recent.paid(now - DAY_MS),
            recent.created(now - 59 * DAY_MS),
            shipped_only.shipped(now - DAY_MS),
            // Redeliveries of the same events.
            paid_late,
            too_old.created(now - 61 * DAY_MS),
        ],
    )
    .await;
    wait_consumed(&app, &buyer, seller.user_id).await;
    let closed = leave(
        &app,
        &buyer.access_token,
        leave_request("old", too_old.id, FeedbackRating::Positive),
    )
    .await
    .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
    assert_eq!(reason(&closed), "FEEDBACK_NOT_ALLOWED");
    for order in [recent, shipped_only] {
        leave(
            &app,
            &seller.access_token,
            leave_request(
                &format!("seller-{}", order.id),
                order.id,
                FeedbackRating::Positive,
            ),
        )
        .await
        .unwrap();
    }
    // The seller's two (the marker's feedback is the buyer's, on the seller).
    assert_eq!(
        counts(&reputation(&app, buyer.user_id).await.as_buyer),
        (2, 0, 0)
    );
    app.stop().await;
}

async fn list_all(app: &TestApp, request: pb::ListFeedbackRequest) -> (Vec<pb::Feedback>, usize) {
    let mut client = users(app).await;
    let mut request = request;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_feedback(request.clone())
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        all.extend(page.feedback);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        request.page_token = page.next_page_token;
        assert!(pages < 100, "ListFeedback does not end");
    }
}

async fn list_feedback_pages(backend: Backend) {
    let app = app(backend).await;
    let subject = app.register_and_login("fbl_subject").await;
    let other = app.register_and_login("fbl_other").await;
    let now = now_ms();
    // The subject sells five times to `other`, and buys twice from them.
    let sales: Vec<Order> = (0..5)
        .map(|_| Order::new(other.user_id, subject.user_id))
        .collect();
    let purchases: Vec<Order> = (0..2)
        .map(|_| Order::new(subject.user_id, other.user_id))
        .collect();
    let mut events = Vec::new();
    for order in sales.iter().chain(&purchases) {
        events.push(order.created(now - DAY_MS));
        events.push(order.paid(now));
    }
    publish(&app, &events).await;
    let ratings = [
        FeedbackRating::Positive,
        FeedbackRating::Negative,
        FeedbackRating::Positive,
        FeedbackRating::Neutral,
        FeedbackRating::Positive,
        FeedbackRating::Negative,
        FeedbackRating::Positive,
    ];
    let mut left = Vec::new();
    for (order, rating) in sales.iter().chain(&purchases).zip(ratings) {
        let request = leave_request(&format!("r-{}", order.id), order.id, rating);
        let feedback = leave_once_delivered(
            &app,
            &other.access_token,
            &request,
            &["ORDER_NOT_FOUND", "FEEDBACK_NOT_ALLOWED"],
        )
        .await
        .unwrap()
        .into_inner()
        .feedback
        .unwrap();
        left.push(feedback);
    }
    // Newest first, by creation time then id: what was left last comes first.
    let mut newest_first = left.clone();
    newest_first.sort_by(|a, b| {
        let key = |feedback: &pb::Feedback| {
            let time = feedback.create_time.unwrap();
            (time.seconds, time.nanos, feedback.feedback_id.clone())
        };
        key(b).cmp(&key(a))
    });
    let everything = pb::ListFeedbackRequest {
        user_id: subject.user_id.to_string(),
        page_size: 2,
        ..pb::ListFeedbackRequest::default()
    };
    let (listed, pages) = list_all(&app, everything.clone()).await;
    assert_eq!(pages, 4, "7 entries in pages of 2");
    assert_eq!(listed, newest_first);
    // The default page holds them all; filters by side and rating.
    let (all, pages) = list_all(
        &app,
        pb::ListFeedbackRequest {
            page_size: 0,
            ..everything.clone()
        },
    )
    .await;
    assert_eq!((all.len(), pages), (7, 1));
    for (side, rating, expected) in [
        (FeedbackSide::FromBuyer, FeedbackRating::Unspecified, 5),
        (FeedbackSide::FromSeller, FeedbackRating::Unspecified, 2),
        (FeedbackSide::Unspecified, FeedbackRating::Positive, 4),
        (FeedbackSide::FromBuyer, FeedbackRating::Negative, 1),
        (FeedbackSide::FromSeller, FeedbackRating::Neutral, 0),
    ] {
        let (found, _) = list_all(
            &app,
            pb::ListFeedbackRequest {
                side: side as i32,
                rating: rating as i32,
                ..everything.clone()
            },
        )
        .await;
        assert_eq!(found.len(), expected, "{side:?} {rating:?}");
        assert!(
            found
                .iter()
                .all(|feedback| (side == FeedbackSide::Unspecified
                    || feedback.side == side as i32)
                    && (rating == FeedbackRating::Unspecified || feedback.rating == rating as i32))
        );
    }
    // A token belongs to its list: other filters, or garbage, are refused.
    let first = users(&app)
        .await
        .list_feedback(everything.clone())
        .await
        .unwrap()
        .into_inner();
    for request in [
        pb::ListFeedbackRequest {
            side: FeedbackSide::FromBuyer as i32,
            page_token: first.next_page_token.clone(),
            ..everything.clone()
        },
        pb::ListFeedbackRequest {
            user_id: other.user_id.to_string(),
            page_token: first.next_page_token.clone(),
            ..everything.clone()
        },
        pb::ListFeedbackRequest {
            page_token: "not-a-token".to_owned(),
            ..everything.clone()
        },
    ] {
        let refused = users(&app).await.list_feedback(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(reason(&refused), "PAGE_TOKEN_INVALID");
    }
    let unknown = users(&app)
        .await
        .list_feedback(pb::ListFeedbackRequest {
            user_id: Uuid::now_v7().to_string(),
            ..pb::ListFeedbackRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "USER_NOT_FOUND");
    // What the list shows, the reputation counts.
    let of_subject = reputation(&app, subject.user_id).await;
    assert_eq!(counts(&of_subject.as_seller), (3, 1, 1));
    assert_eq!(counts(&of_subject.as_buyer), (1, 0, 1));
    assert_eq!(counts(&of_subject.overall), (4, 1, 2));
    app.stop().await;
}

// Proves ListFeedback on SQLite: anyone may call it, newest first across
// stable pages, side and rating filters, page tokens bound to their list,
// USER_NOT_FOUND for an unknown user.
#[tokio::test]
async fn list_feedback_pages_sqlite() {
    list_feedback_pages(Backend::Sqlite).await;
}

// Proves ListFeedback on PostgreSQL (as on SQLite).
#[tokio::test]
async fn list_feedback_pages_postgres() {
    list_feedback_pages(Backend::Postgres).await;
}

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// Waits until the buyer sees the order of `auction_id`.
async fn wait_order(
    payments: &mut PaymentServiceClient<Channel>,
    token: &str,
    auction_id: Uuid,
) -> pb::Order {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let orders = payments
            .list_orders(with_token(
                pb::ListOrdersRequest {
                    auction_id: auction_id.to_string(),
                    page_size: 10,
                    ..pb::ListOrdersRequest::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .orders;
        if let Some(order) = orders.into_iter().next() {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no order for auction {auction_id} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Proves the whole path with no hand-made events: a real English auction
// closes in the bidding service, the payment service makes the order, the
// buyer pays with the sandbox card, then both sides leave feedback and
// GetReputation counts it.
#[tokio::test]
async fn feedback_after_a_real_sale() {
    let app = app(Backend::Postgres).await;
    let seller = app.register_and_login("fbr_seller").await;
    let buyer = app.register_and_login("fbr_buyer").await;
    let admin = app.access_token(Uuid::now_v7(), &[Role::Admin]);
    let mut bidding = BiddingServiceClient::new(app.channel().await);
    let mut payments = PaymentServiceClient::new(app.channel().await);
    let now = SystemTime::now();
    let auction_id = Uuid::now_v7();
    bidding
        .create_auction(with_token(
            pb::CreateAuctionRequest {
                request_id: format!("create-{auction_id}"),
                auction_id: auction_id.to_string(),
                seller_id: seller.user_id.to_string(),
                seller_handle: "fbr_seller".to_owned(),
                title: "A real lot".to_owned(),
                parameters: Some(pb::AuctionParameters {
                    format: pb::AuctionFormat::English as i32,
                    format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                        pb::EnglishParameters {
                            starting_price: Some(usd("10.00")),
                            // No soft close: the bid lands near the end.
                            soft_close_window: Some(prost_types::Duration {
                                seconds: 0,
                                nanos: 0,
                            }),
                            ..pb::EnglishParameters::default()
                        },
                    )),
                }),
                start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(1))),
                end_time: Some(prost_types::Timestamp::from(now + Duration::from_secs(3))),
                ..pb::CreateAuctionRequest::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    bidding
        .set_max_bid(with_token(
            pb::SetMaxBidRequest {
                request_id: "bid".to_owned(),
                auction_id: auction_id.to_string(),
                max_amount: Some(usd("150.00")),
            },
            &buyer.access_token,
        ))
        .await
        .unwrap();
    let order = wait_order(&mut payments, &buyer.access_token, auction_id).await;
    assert_eq!(order.seller_id, seller.user_id.to_string());
    let order_id: Uuid = order.order_id.parse().unwrap();
    // Before payment the order is known but closed to feedback.
    let early = leave_once_delivered(
        &app,
        &buyer.access_token,
        &leave_request("early", order_id, FeedbackRating::Positive),
        &["ORDER_NOT_FOUND"],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&early), "FEEDBACK_NOT_ALLOWED");
    payments
        .pay_order(with_token(
            pb::PayOrderRequest {
                request_id: "pay".to_owned(),
                order_id: order.order_id.clone(),
                payment_method_token: "tok_sandbox_success".to_owned(),
                expected_amount: order.total_due.clone(),
            },
            &buyer.access_token,
        ))
        .await
        .unwrap();
    let from_buyer = leave_once_delivered(
        &app,
        &buyer.access_token,
        &leave_request("buyer", order_id, FeedbackRating::Positive),
        &["FEEDBACK_NOT_ALLOWED"],
    )
    .await
    .unwrap()
    .into_inner()
    .feedback
    .unwrap();
    assert_eq!(from_buyer.auction_id, auction_id.to_string());
    assert_eq!(from_buyer.subject_user_id, seller.user_id.to_string());
    let from_seller = leave(
        &app,
        &seller.access_token,
        leave_request("seller", order_id, FeedbackRating::Positive),
    )
    .await
    .unwrap()
    .into_inner()
    .feedback
    .unwrap();
    assert_eq!(from_seller.subject_user_id, buyer.user_id.to_string());
    assert_eq!(
        counts(&reputation(&app, seller.user_id).await.as_seller),
        (1, 0, 0)
    );
    assert_eq!(
        counts(&reputation(&app, buyer.user_id).await.as_buyer),
        (1, 0, 0)
    );
    app.stop().await;
}
