//! The notification service over the real wire, on SQLite and PostgreSQL:
//! the event bus into the inbox (through a Redis that is killed and started
//! again mid-flow), the resumable Subscribe stream, preferences, signed
//! webhooks with retries, and e-mail to a local SMTP sink (plain, STARTTLS
//! and implicit TLS with a private CA; no relay login over plain SMTP).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use auction_platform::auth::Role;
use auction_platform::bus::outbox::{self, Relay, RelayOptions};
use auction_platform::bus::redis::RedisStreamsBus;
use auction_platform::bus::{self, Envelope, EventBus, TOPIC_AUCTION, TOPIC_USER};
use auction_platform::config::{Config, RedisConfig, SmtpConfig, SmtpTls};
use auction_platform::{Database, Shutdown};
use auction_proto::v1 as pb;
use auction_proto::v1::notification_service_client::NotificationServiceClient;
use auction_testkit::{Backend, RedisServer, SmtpSink, TestApp, spawn_app_with, with_token};
use hmac::Mac as _;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// What the bidding service publishes when `outbid` loses the lead on
/// `auction_id` at `price` (engine sequence `sequence`).
fn outbid(auction_id: &str, sequence: u64, outbid: Uuid, price: &str) -> Envelope {
    let leader = Uuid::now_v7().to_string();
    let event = pb::BusAuctionEvent {
        auction_id: auction_id.to_owned(),
        sequence,
        event_time: Some(bus::timestamp_from_ms(now_ms())),
        seller_id: Uuid::now_v7().to_string(),
        title: "Lamp".to_owned(),
        kind: Some(pb::bus_auction_event::Kind::BidPlaced(
            pb::BusAuctionBidPlaced {
                bidder_id: leader.clone(),
                price: Some(usd(price)),
                leader_id: leader,
                outbid_user_id: outbid.to_string(),
                reserve_met: true,
                ..pb::BusAuctionBidPlaced::default()
            },
        )),
    };
    Envelope::new("bidding", TOPIC_AUCTION, auction_id, now_ms(), &event)
}

/// An auction that ended below its reserve with `bidder` highest: only the
/// notification service reacts to it (a sale would also make the payment
/// service create an order, whose own notifications would interleave).
fn reserve_not_met(auction_id: &str, bidder: Uuid) -> Envelope {
    let event = pb::BusAuctionEvent {
        auction_id: auction_id.to_owned(),
        sequence: 1_000,
        seller_id: Uuid::now_v7().to_string(),
        title: "Lamp".to_owned(),
        kind: Some(pb::bus_auction_event::Kind::Unsold(pb::BusAuctionUnsold {
            reason: pb::BusAuctionUnsoldReason::ReserveNotMet as i32,
            highest_bidder_id: bidder.to_string(),
        })),
        ..pb::BusAuctionEvent::default()
    };
    Envelope::new("bidding", TOPIC_AUCTION, auction_id, now_ms(), &event)
}

async fn client(app: &TestApp) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(app.channel().await)
}

type Stream = tonic::Streaming<pb::SubscribeResponse>;

async fn subscribe(app: &TestApp, token: &str, resume_after_sequence: u64) -> Stream {
    client(app)
        .await
        .subscribe(with_token(
            pb::SubscribeRequest {
                resume_after_sequence,
            },
            token,
        ))
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next message that is not a heartbeat.
async fn next_message(stream: &mut Stream) -> pb::subscribe_response::Message {
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a stream message within the timeout")
            .expect("stream ok")
            .expect("stream open")
            .message
            .expect("a message");
        if !matches!(message, pb::subscribe_response::Message::Heartbeat(_)) {
            return message;
        }
    }
}

async fn next_event(stream: &mut Stream) -> pb::InboxEvent {
    match next_message(stream).await {
        pb::subscribe_response::Message::Event(event) => event,
        other => panic!("expected an inbox event, got {other:?}"),
    }
}

fn notification_of(event: &pb::InboxEvent) -> &pb::Notification {
    match &event.kind {
        Some(pb::inbox_event::Kind::Notification(notification)) => notification,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// `received` are the outbid notifications of amounts 1.00 to `count`.00,
/// each exactly once, with the inbox sequences 1 to `count` in order.
fn assert_each_outbid_once(received: &[pb::InboxEvent], count: u64) {
    let sequences: Vec<u64> = received.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=count).collect::<Vec<u64>>());
    let mut amounts: Vec<String> = received
        .iter()
        .map(|event| notification_of(event).amount.clone().unwrap().amount)
        .collect();
    amounts.sort_by_key(|amount| amount.trim_end_matches(".00").parse::<u32>().unwrap());
    assert_eq!(
        amounts,
        (1..=count).map(|n| format!("{n}.00")).collect::<Vec<_>>()
    );
}

/// A producer service of our own: its outbox table in a SQLite file,
/// relayed to the given bus, as the bidding service will do.
struct Producer {
    pool: sqlx::SqlitePool,
    relay: Relay,
    database: Database,
    _dir: tempfile::TempDir,
}

impl Producer {
    async fn start(bus: Arc<dyn EventBus>, shutdown: Shutdown) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("producer.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(outbox::SQLITE_MIGRATION)
            .execute(&pool)
            .await
            .unwrap();
        let database = Database::Sqlite(pool.clone());
        let relay = Relay::spawn(
            database.clone(),
            bus,
            shutdown,
            RelayOptions {
                poll_interval: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ..RelayOptions::default()
            },
        );
        Self {
            pool,
            relay,
            database,
            _dir: dir,
        }
    }

    /// Commits `envelope` in the producer's outbox (with a state change of
    /// its own it would make in the same transaction), then wakes the relay.
    async fn produce(&self, envelope: &Envelope) {
        let mut transaction = self.pool.begin().await.unwrap();
        outbox::stage(&mut transaction, std::slice::from_ref(envelope))
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        self.relay.wake();
    }
}

async fn redis_outage_loses_no_event(backend: Backend) {
    let mut redis = RedisServer::start().await;
    let prefix = format!("test-{}", Uuid::now_v7().simple());
    let redis_config = RedisConfig {
        url: Some(redis.url()),
        stream_prefix: prefix.clone(),
        claim_idle_ms: 500,
        ..RedisConfig::default()
    };
    let app_redis = redis_config.clone();
    let app = spawn_app_with(backend, move |config| config.redis = app_redis).await;
    let shutdown = Shutdown::new();
    let producer_bus: Arc<dyn EventBus> = Arc::new(RedisStreamsBus::new(&redis_config).unwrap());
    let producer = Producer::start(Arc::clone(&producer_bus), shutdown.clone()).await;

    let user = Uuid::now_v7();
    let token = app.access_token(user, &[Role::Bidder]);
    let mut stream = subscribe(&app, &token, 0).await;
    let pb::subscribe_response::Message::Snapshot(snapshot) = next_message(&mut stream).await
    else {
        panic!("a fresh stream starts with a snapshot");
    };
    assert_eq!(snapshot.sequence, 0);

    let auction = Uuid::now_v7().to_string();
    let mut produced = Vec::new();
    let mut received = Vec::new();
    // Before the outage.
    for sequence in 1..=5 {
        let envelope = outbid(&auction, sequence, user, &format!("{sequence}.00"));
        producer.produce(&envelope).await;
        produced.push(envelope);
    }
    for _ in 0..5 {
        received.push(next_event(&mut stream).await);
    }
    // Redis crashes; the producer keeps committing; Redis comes back.
    redis.kill();
    for sequence in 6..=10 {
        let envelope = outbid(&auction, sequence, user, &format!("{sequence}.00"));
        producer.produce(&envelope).await;
        produced.push(envelope);
    }
    assert!(
        outbox::unpublished_count(&producer.database).await.unwrap() > 0,
        "the outbox holds what Redis could not take"
    );
    redis.restart().await;
    for sequence in 11..=15 {
        let envelope = outbid(&auction, sequence, user, &format!("{sequence}.00"));
        producer.produce(&envelope).await;
        produced.push(envelope);
    }
    for _ in 0..10 {
        received.push(next_event(&mut stream).await);
    }
    // A redelivery of an event already handled changes nothing: publish a
    // duplicate straight onto the bus, then a marker, and expect the marker next.
    producer_bus.publish(&[produced[7].clone()]).await.unwrap();
    producer.produce(&reserve_not_met(&auction, user)).await;
    let marker = next_event(&mut stream).await;
    assert_eq!(
        notification_of(&marker).notification_type,
        pb::NotificationType::ReserveNotMet as i32
    );

    // Every event exactly once, in a gap-free per-user sequence.
    assert_each_outbid_once(&received, 15);
    assert_eq!(marker.sequence, 16);
    let listed = client(&app)
        .await
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                page_size: 100,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notifications.len(), 16);
    assert_eq!(listed.unread_count, 16);
    // Everything is marked published (on SQLite the relay marks within
    // about a second of publishing).
    let deadline = tokio::time::Instant::now() + WAIT;
    while outbox::unpublished_count(&producer.database).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox was never marked published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    app.stop().await;
}

// Proves a Redis crash and restart mid-flow loses no event and duplicates
// none: events committed to a producer's outbox while Redis was down reach
// the inbox exactly once, gap-free, with the inbox on SQLite.
#[tokio::test]
async fn redis_outage_loses_no_event_sqlite() {
    redis_outage_loses_no_event(Backend::Sqlite).await;
}

// Proves the same with the inbox on PostgreSQL.
#[tokio::test]
async fn redis_outage_loses_no_event_postgres() {
    redis_outage_loses_no_event(Backend::Postgres).await;
}

async fn burst_is_consumed_exactly_once(backend: Backend) {
    let prefix = format!("test-{}", Uuid::now_v7().simple());
    let redis_config = RedisConfig {
        url: Some(auction_testkit::redis_url()),
        stream_prefix: prefix,
        claim_idle_ms: 300,
        max_deliveries: 3,
        ..RedisConfig::default()
    };
    let app_redis = redis_config.clone();
    let app = spawn_app_with(backend, move |config| config.redis = app_redis).await;
    let producer_bus = RedisStreamsBus::new(&redis_config).unwrap();
    let user = Uuid::now_v7();
    let token = app.access_token(user, &[Role::Bidder]);
    let mut stream = subscribe(&app, &token, 0).await;
    let pb::subscribe_response::Message::Snapshot(_) = next_message(&mut stream).await else {
        panic!("a fresh stream starts with a snapshot");
    };

    // One publish: the consumer reads it in batches. Inside: a redelivery
    // of an event of the same burst, an event whose payload cannot be
    // decoded, and (PostgreSQL) one whose title PostgreSQL refuses (a NUL
    // character), which fails the batch's transaction.
    let auction = Uuid::now_v7().to_string();
    let mut burst: Vec<Envelope> = (1..=40)
        .map(|sequence| outbid(&auction, sequence, user, &format!("{sequence}.00")))
        .collect();
    let mut undecodable = outbid(&auction, 41, user, "41.00");
    undecodable.payload = vec![0xff; 3];
    let mut refused: pb::BusAuctionEvent = outbid(&auction, 42, user, "42.00").decode().unwrap();
    refused.title = "Lamp\0".to_owned();
    let refused = Envelope::new("bidding", TOPIC_AUCTION, &auction, now_ms(), &refused);
    burst.insert(10, undecodable.clone());
    burst.insert(20, burst[4].clone());
    if backend == Backend::Postgres {
        burst.insert(30, refused.clone());
    }
    producer_bus.publish(&burst).await.unwrap();

    let mut received = Vec::new();
    for _ in 1..=40 {
        received.push(next_event(&mut stream).await);
    }
    assert_each_outbid_once(&received, 40);
    // The bad events end in the dead letters (after three deliveries); they
    // left nothing behind and held nothing back.
    let mut poison = vec![undecodable.event_id];
    if backend == Backend::Postgres {
        poison.push(refused.event_id);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dead: Vec<Uuid> = producer_bus
            .dead_letters(TOPIC_AUCTION)
            .await
            .unwrap()
            .iter()
            .map(|envelope| envelope.event_id)
            .collect();
        if poison.iter().all(|event_id| dead.contains(event_id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "poison not dead-lettered in time: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer_bus
        .publish(&[reserve_not_met(&auction, user)])
        .await
        .unwrap();
    let marker = next_event(&mut stream).await;
    assert_eq!(
        notification_of(&marker).notification_type,
        pb::NotificationType::ReserveNotMet as i32
    );
    assert_eq!(marker.sequence, 41);
    app.stop().await;
}

// Proves events published together are consumed exactly once and gap-free
// (a redelivery inside the burst counts once; an undecodable event fails
// alone and is dead-lettered), with the inbox on SQLite.
#[tokio::test]
async fn burst_is_consumed_exactly_once_sqlite() {
    burst_is_consumed_exactly_once(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL, where one event of the burst also fails
// inside the store: its batch's transaction rolls back, the other events
// are consumed one by one, and the bad one is dead-lettered.
#[tokio::test]
async fn burst_is_consumed_exactly_once_postgres() {
    burst_is_consumed_exactly_once(Backend::Postgres).await;
}

/// An auction event of `auction_id` ending at `end_ms`: opened, or a bid
/// by `bidder` (who becomes a participant).
fn auction_event(auction_id: &str, end_ms: i64, bidder: Option<Uuid>) -> Envelope {
    let end_time = Some(bus::timestamp_from_ms(end_ms));
    let kind = match bidder {
        None => pb::bus_auction_event::Kind::Opened(pb::BusAuctionOpened {
            starting_price: Some(usd("1.00")),
            end_time,
            ..pb::BusAuctionOpened::default()
        }),
        Some(bidder) => pb::bus_auction_event::Kind::BidPlaced(pb::BusAuctionBidPlaced {
            bidder_id: bidder.to_string(),
            leader_id: bidder.to_string(),
            price: Some(usd("2.00")),
            end_time,
            ..pb::BusAuctionBidPlaced::default()
        }),
    };
    let event = pb::BusAuctionEvent {
        auction_id: auction_id.to_owned(),
        sequence: if bidder.is_some() { 3 } else { 2 },
        event_time: Some(bus::timestamp_from_ms(now_ms())),
        seller_id: Uuid::now_v7().to_string(),
        title: "Lamp".to_owned(),
        kind: Some(kind),
    };
    Envelope::new("bidding", TOPIC_AUCTION, auction_id, now_ms(), &event)
}

/// The ENDING_SOON notifications `token`'s user has, by auction id.
async fn ending_soon_of(app: &TestApp, token: &str) -> Vec<String> {
    let mut auctions: Vec<String> = client(app)
        .await
        .list_notifications(with_token(
            pb::ListNotificationsRequest {
                types: vec![pb::NotificationType::EndingSoon as i32],
                page_size: 100,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications
        .into_iter()
        .map(|notification| notification.auction_id)
        .collect();
    auctions.sort();
    auctions
}

async fn set_ending_soon_lead(app: &TestApp, token: &str, request_id: &str, lead_s: i64) {
    client(app)
        .await
        .update_notification_preferences(with_token(
            pb::UpdateNotificationPreferencesRequest {
                request_id: request_id.to_owned(),
                ending_soon_lead: Some(prost_types::Duration {
                    seconds: lead_s,
                    nanos: 0,
                }),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

async fn ending_soon_goes_once_to_whom_it_is_due(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.notification.ending_soon_scan_interval_ms = 50;
    })
    .await;
    let bus = bus::for_process(&app.config).unwrap();
    // Default lead 15 min; `patient` wants 1 min.
    let (eager, patient) = (Uuid::now_v7(), Uuid::now_v7());
    let eager_token = app.access_token(eager, &[Role::Bidder]);
    let patient_token = app.access_token(patient, &[Role::Bidder]);
    set_ending_soon_lead(&app, &patient_token, "lead-1", 60).await;
    let soon = Uuid::now_v7().to_string();
    let in_two_days = Uuid::now_v7().to_string();
    let finished = Uuid::now_v7().to_string();
    let soon_end = now_ms() + 10 * 60_000;
    let mut events = Vec::new();
    for (auction, end_ms) in [
        (&soon, soon_end),
        (&in_two_days, now_ms() + 2 * 86_400_000),
        (&finished, soon_end),
    ] {
        events.push(auction_event(auction, end_ms, None));
        events.push(auction_event(auction, end_ms, Some(eager)));
        events.push(auction_event(auction, end_ms, Some(patient)));
    }
    events.push(reserve_not_met(&finished, patient));
    let mut stream = subscribe(&app, &eager_token, 0).await;
    assert!(matches!(
        next_message(&mut stream).await,
        pb::subscribe_response::Message::Snapshot(_)
    ));
    bus.publish(&events).await.unwrap();
    // The eager bidder is told of the auction ending in 10 minutes, and of
    // nothing else.
    let told = loop {
        let event = next_event(&mut stream).await;
        let notification = notification_of(&event);
        if notification.notification_type == pb::NotificationType::EndingSoon as i32 {
            break notification.clone();
        }
    };
    assert_eq!(told.auction_id, soon);
    assert_eq!(told.deadline_time, Some(bus::timestamp_from_ms(soon_end)));
    // Many scans later: still once, and the patient bidder not yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ending_soon_of(&app, &eager_token).await, vec![soon.clone()]);
    assert!(ending_soon_of(&app, &patient_token).await.is_empty());
    // A longer lead makes the patient bidder due at the next scan.
    set_ending_soon_lead(&app, &patient_token, "lead-2", 20 * 60).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ending_soon_of(&app, &patient_token).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the patient bidder was never told"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ending_soon_of(&app, &patient_token).await,
        vec![soon.clone()]
    );
    assert_eq!(ending_soon_of(&app, &eager_token).await, vec![soon]);
}

// Proves ENDING_SOON reaches each participant once, when the end minus the
// user's lead time has come, and never for an auction ending beyond the
// day's horizon or already over (SQLite).
#[tokio::test]
async fn ending_soon_goes_once_to_whom_it_is_due_sqlite() {
    ending_soon_goes_once_to_whom_it_is_due(Backend::Sqlite).await;
}

// The same on PostgreSQL.
#[tokio::test]
async fn ending_soon_goes_once_to_whom_it_is_due_postgres() {
    ending_soon_goes_once_to_whom_it_is_due(Backend::Postgres).await;
}

async fn stream_resume_preferences_and_read_state(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let bus = bus::for_process(&app.config).unwrap();
    let user = Uuid::now_v7();
    let token = app.access_token(user, &[Role::Bidder]);
    let mut notifications = client(&app).await;
    let auction = Uuid::now_v7().to_string();
    let mut stream = subscribe(&app, &token, 0).await;
    assert!(matches!(
        next_message(&mut stream).await,
        pb::subscribe_response::Message::Snapshot(_)
    ));
    bus.publish(&[
        outbid(&auction, 1, user, "1.00"),
        outbid(&auction, 2, user, "2.00"),
        outbid(&auction, 3, user, "3.00"),
    ])
    .await
    .unwrap();
    for expected in 1..=3 {
        assert_eq!(next_event(&mut stream).await.sequence, expected);
    }
    // Mark read up to 2: the count drops and every stream hears of it.
    let marked = notifications
        .mark_notifications_read(with_token(
            pb::MarkNotificationsReadRequest {
                request_id: "mark-1".to_owned(),
                up_to_sequence: 2,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.unread_count, 1);
    let read = next_event(&mut stream).await;
    assert_eq!(read.sequence, 4);
    assert!(
        matches!(read.kind, Some(pb::inbox_event::Kind::NotificationsRead(ref change)) if change.unread_count == 1)
    );
    // Resume after 2: a heartbeat, then exactly 3 and 4.
    let mut resumed = subscribe(&app, &token, 2).await;
    let first = tokio::time::timeout(WAIT, resumed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .message
        .unwrap();
    assert!(
        matches!(first, pb::subscribe_response::Message::Heartbeat(ref beat) if beat.latest_sequence == 4)
    );
    assert_eq!(next_event(&mut resumed).await.sequence, 3);
    assert_eq!(next_event(&mut resumed).await.sequence, 4);
    let count = notifications
        .get_unread_count(with_token(pb::GetUnreadCountRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((count.unread_count, count.sequence), (1, 4));
    // OUTBID without IN_APP: the next outbid stays off the stream; the WON
    // published after it is the next event.
    let updated = notifications
        .update_notification_preferences(with_token(
            pb::UpdateNotificationPreferencesRequest {
                request_id: "prefs-1".to_owned(),
                preferences: vec![pb::NotificationPreference {
                    notification_type: pb::NotificationType::Outbid as i32,
                    channels: vec![pb::NotificationChannel::Email as i32],
                }],
                ending_soon_lead: Some(prost_types::Duration {
                    seconds: 120,
                    nanos: 0,
                }),
                interest_keywords: Some(pb::InterestKeywords {
                    keywords: vec!["lamp".to_owned()],
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(updated.ending_soon_lead.unwrap().seconds, 120);
    assert_eq!(updated.interest_keywords, vec!["lamp".to_owned()]);
    bus.publish(&[
        outbid(&auction, 4, user, "4.00"),
        reserve_not_met(&auction, user),
    ])
    .await
    .unwrap();
    let next = next_event(&mut stream).await;
    assert_eq!(next.sequence, 5);
    assert_eq!(
        notification_of(&next).notification_type,
        pb::NotificationType::ReserveNotMet as i32
    );
    // The same request id with other content is refused.
    let reused = notifications
        .mark_notifications_read(with_token(
            pb::MarkNotificationsReadRequest {
                request_id: "mark-1".to_owned(),
                up_to_sequence: 3,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    // Another user sees none of it; no token is refused.
    let other = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    let theirs = notifications
        .list_notifications(with_token(pb::ListNotificationsRequest::default(), &other))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.notifications.is_empty());
    let anonymous = notifications
        .list_notifications(pb::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

// Proves resume after a sequence gives a heartbeat then every later event
// with no gap, marking read is streamed and counted, preferences switch
// IN_APP off per type, idempotency keys hold, and users see only their own
// inbox (SQLite, in-process bus).
#[tokio::test]
async fn stream_resume_preferences_and_read_state_sqlite() {
    stream_resume_preferences_and_read_state(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn stream_resume_preferences_and_read_state_postgres() {
    stream_resume_preferences_and_read_state(Backend::Postgres).await;
}

/// A receiver's connection, plain or TLS.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// One HTTP request the webhook receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP endpoint that answers 500 to its first `failures` requests and
/// 204 afterwards, reporting every request; over TLS with `tls`.
async fn webhook_receiver_over(
    failures: usize,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            let served = Arc::clone(&served);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let stream: Box<dyn Connection> = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => return,
                    },
                    None => Box::new(stream),
                };
                let (reader, mut writer) = tokio::io::split(stream);
                let mut reader = tokio::io::BufReader::new(reader);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = std::collections::HashMap::new();
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap();
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                    }
                    let length: usize = headers
                        .get("content-length")
                        .map_or(0, |value| value.parse().unwrap());
                    let mut body = vec![0_u8; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let count = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer: &[u8] = if count < failures {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nnope"
                    } else {
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    };
                    writer.write_all(answer).await.unwrap();
                    let _ = sender.send(Delivery { headers, body });
                }
            });
        }
    });
    (port, receiver)
}

/// Checks `Auction-Signature` with our own HMAC, as a partner would.
fn signature_is_valid(delivery: &Delivery, secret: &str) -> bool {
    let header = &delivery.headers["auction-signature"];
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = Some(value.to_owned()),
            Some(("v1", value)) => signatures.push(value.to_owned()),
            _ => return false,
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let age_secs = now_ms() / 1_000 - timestamp.parse::<i64>().unwrap();
    if !(0..300).contains(&age_secs) {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&delivery.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    signatures.contains(&expected)
}

async fn next_delivery(
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>,
) -> Delivery {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .expect("a delivery within the timeout")
        .expect("receiver open")
}

async fn webhook_retries_until_delivered(backend: Backend) {
    webhook_retries_until_delivered_over(backend, false).await;
}

/// With `https`, the receiver speaks TLS with a certificate of a private CA
/// that the service trusts through `notification.webhook_extra_ca_file`.
async fn webhook_retries_until_delivered_over(backend: Backend, https: bool) {
    let data = tempfile::tempdir().unwrap();
    let ca_file = data.path().join("webhook-ca.pem");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let trusted = ca_file.clone();
    let app = spawn_app_with(backend, move |config: &mut Config| {
        config.notification.webhook_retry_delays_ms = vec![50, 100, 150, 200, 250, 300, 350];
        config.notification.webhook_extra_ca_file = Some(trusted);
    })
    .await;
    let bus = bus::for_process(&app.config).unwrap();
    let tls = https.then(|| {
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
            certified.key_pair.serialize_der().into(),
        );
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        Arc::new(config)
    });
    let (port, mut deliveries) = webhook_receiver_over(3, tls).await;
    let (scheme, host) = if https {
        ("https", "localhost")
    } else {
        ("http", "127.0.0.1")
    };
    let owner = Uuid::now_v7();
    let token = app.access_token(owner, &[Role::Bidder]);
    let mut notifications = client(&app).await;
    let registered = notifications
        .register_webhook(with_token(
            pb::RegisterWebhookRequest {
                request_id: "hook-1".to_owned(),
                url: format!("{scheme}://{host}:{port}/hook"),
                description: "partner".to_owned(),
                types: vec![pb::NotificationType::Outbid as i32],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = registered.signing_secret.clone();
    let webhook = registered.webhook.unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(webhook.secret_prefix, secret[..10]);
    assert_eq!(webhook.state, pb::WebhookState::Enabled as i32);

    let auction = Uuid::now_v7().to_string();
    let first = outbid(&auction, 1, owner, "5.00");
    bus.publish(std::slice::from_ref(&first)).await.unwrap();
    let attempts: Vec<Delivery> = {
        let mut attempts = Vec::new();
        for _ in 0..4 {
            attempts.push(next_delivery(&mut deliveries).await);
        }
        attempts
    };
    let event_id = attempts[0].headers["auction-event-id"].clone();
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(
            attempt.headers["auction-event-id"], event_id,
            "the same event id on every retry"
        );
        assert_eq!(
            attempt.headers["auction-delivery-attempt"],
            (index + 1).to_string()
        );
        assert_eq!(attempt.headers["auction-webhook-id"], webhook.webhook_id);
        assert!(
            signature_is_valid(attempt, &secret),
            "attempt {} is signed",
            index + 1
        );
        let body: serde_json::Value = serde_json::from_slice(&attempt.body).unwrap();
        assert_eq!(body["notification"]["notificationId"], event_id.as_str());
        assert_eq!(
            body["notification"]["notificationType"],
            "NOTIFICATION_TYPE_OUTBID"
        );
        assert_eq!(body["attemptNumber"], index + 1);
    }
    // The same bus event again (a redelivery) and then a new one: the next
    // request carries the new event's id, so each id was delivered once.
    bus.publish(&[first, outbid(&auction, 2, owner, "6.00")])
        .await
        .unwrap();
    let next = next_delivery(&mut deliveries).await;
    assert_ne!(next.headers["auction-event-id"], event_id);
    assert_eq!(next.headers["auction-delivery-attempt"], "1");
    assert!(signature_is_valid(&next, &secret));

    // The delivery log the partner reads: newest first.
    let log = notifications
        .list_webhook_deliveries(with_token(
            pb::ListWebhookDeliveriesRequest {
                webhook_id: webhook.webhook_id.clone(),
                notification_id: event_id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    let outcomes: Vec<(u32, i32)> = log
        .iter()
        .map(|delivery| (delivery.attempt_number, delivery.outcome))
        .collect();
    let retrying = pb::DeliveryOutcome::Retrying as i32;
    assert_eq!(
        outcomes,
        vec![
            (4, pb::DeliveryOutcome::Succeeded as i32),
            (3, retrying),
            (2, retrying),
            (1, retrying)
        ]
    );
    assert_eq!(log[1].status_code, 500);
    assert!(log[1].next_retry_time.is_some());

    // Only the owner (or an admin) sees or changes the webhook.
    let stranger = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    let refused = notifications
        .set_webhook_enabled(with_token(
            pb::SetWebhookEnabledRequest {
                request_id: "x".to_owned(),
                webhook_id: webhook.webhook_id.clone(),
                enabled: false,
            },
            &stranger,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let theirs = notifications
        .list_webhooks(with_token(pb::ListWebhooksRequest::default(), &stranger))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.webhooks.is_empty());
    let replay = notifications
        .register_webhook(with_token(
            pb::RegisterWebhookRequest {
                request_id: "hook-1".to_owned(),
                url: format!("{scheme}://{host}:{port}/hook"),
                description: "partner".to_owned(),
                types: vec![pb::NotificationType::Outbid as i32],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay.signing_secret, secret,
        "an idempotent replay returns the same secret"
    );
    app.stop().await;
}

// Proves a webhook receiver that fails its first three deliveries gets the
// event on the fourth attempt, every attempt signed (checked with our own
// HMAC) with the same event id, a redelivered bus event is not delivered
// again, the delivery log records each attempt, and strangers cannot touch
// the webhook (PostgreSQL).
#[tokio::test]
async fn webhook_retries_until_delivered_postgres() {
    webhook_retries_until_delivered(Backend::Postgres).await;
}

// Proves the same on SQLite.
#[tokio::test]
async fn webhook_retries_until_delivered_sqlite() {
    webhook_retries_until_delivered(Backend::Sqlite).await;
}

// Proves the same over https: the receiver's certificate comes from a
// private CA the service trusts by configuration, and every attempt,
// failed or not, is a TLS connection (SQLite).
#[tokio::test]
async fn webhook_retries_until_delivered_over_https() {
    webhook_retries_until_delivered_over(Backend::Sqlite, true).await;
}

// Proves an OUTBID notification reaches a local SMTP sink as an e-mail to
// the address the user service published (SQLite, in-process bus).
#[tokio::test]
async fn email_reaches_the_smtp_sink() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port;
    let app = spawn_app_with(Backend::Sqlite, move |config: &mut Config| {
        config.notification.smtp = Some(SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            tls: SmtpTls::None,
            extra_ca_file: None,
            from_address: "Auctions <no-reply@auction.test>".to_owned(),
            username: None,
            password: None,
            timeout_ms: 5_000,
        });
        config.notification.email_retry_delays_ms = vec![50, 100, 200, 400, 800, 1_600];
    })
    .await;
    let bus = bus::for_process(&app.config).unwrap();
    let user = Uuid::now_v7();
    let contact = pb::BusUserEvent {
        user_id: user.to_string(),
        event_time: None,
        kind: Some(pb::bus_user_event::Kind::ContactChanged(
            pb::BusUserContactChanged {
                email: "carol@example.test".to_owned(),
                display_name: "Carol".to_owned(),
            },
        )),
    };
    bus.publish(&[Envelope::new(
        "user",
        TOPIC_USER,
        user.to_string(),
        now_ms(),
        &contact,
    )])
    .await
    .unwrap();
    bus.publish(&[outbid(&Uuid::now_v7().to_string(), 1, user, "7.50")])
        .await
        .unwrap();
    let mail = sink
        .next_message(WAIT)
        .await
        .expect("an e-mail within the timeout");
    assert_eq!(mail.to, vec!["carol@example.test".to_owned()]);
    assert_eq!(mail.from, "no-reply@auction.test");
    assert!(
        mail.data.contains("Subject: You have been outbid on Lamp"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("Hello Carol"), "{}", mail.data);
    app.stop().await;
}

// ----- SMTP over TLS -----

/// What the TLS sink saw of one message (all of it inside TLS).
#[derive(Debug)]
struct TlsMail {
    /// `AUTH PLAIN` user and password, if the client logged in.
    login: Option<(String, String)>,
    /// `RCPT TO` addresses.
    to: Vec<String>,
    /// The message after DATA.
    data: String,
}

/// A certificate for `localhost` and 127.0.0.1 (self-signed: it is its own
/// private CA), as a rustls server configuration and as a PEM file to trust.
fn private_ca(
    dir: &std::path::Path,
) -> (Arc<tokio_rustls::rustls::ServerConfig>, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let ca_file = dir.join("smtp-ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
        certified.key_pair.serialize_der().into(),
    );
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), ca_file)
}

/// A running [`tls_smtp_sink`].
struct TlsSink {
    port: u16,
    /// Messages received, all inside TLS.
    received: tokio::sync::mpsc::UnboundedReceiver<TlsMail>,
    /// One `()` per TLS handshake the client broke off (for example
    /// because it does not trust the certificate).
    refused_handshakes: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// An SMTP sink that speaks TLS: from the first byte (`implicit`), or after
/// STARTTLS, which it requires before MAIL (so a plain message is refused).
async fn tls_smtp_sink(tls: Arc<tokio_rustls::rustls::ServerConfig>, implicit: bool) -> TlsSink {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let (refused, refused_handshakes) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                if !implicit {
                    // The plain part: greeting, EHLO offering STARTTLS,
                    // then the upgrade. Nothing else is accepted in clear.
                    let (reader, mut writer) = stream.split();
                    let mut lines = BufReader::new(reader);
                    let mut line = String::new();
                    if writer.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                        return;
                    }
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.trim_end().to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink\r\n250 STARTTLS\r\n"
                        } else if upper == "STARTTLS" {
                            b"220 go ahead\r\n"
                        } else {
                            b"530 must issue STARTTLS first\r\n"
                        };
                        if writer.write_all(reply).await.is_err() {
                            return;
                        }
                        if upper == "STARTTLS" {
                            break;
                        }
                    }
                }
                let Ok(tls_stream) = acceptor.accept(stream).await else {
                    let _ = refused.send(());
                    return;
                };
                let _ = tls_session(tls_stream, implicit, sender).await;
            });
        }
    });
    TlsSink {
        port,
        received,
        refused_handshakes,
    }
}

/// The SMTP session inside TLS (`greet`: send the 220 first, as on an
/// implicit-TLS port; after STARTTLS the client speaks first).
async fn tls_session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    greet: bool,
    sender: tokio::sync::mpsc::UnboundedSender<TlsMail>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader);
    if greet {
        writer.write_all(b"220 sink ESMTP\r\n").await?;
    }
    let mut login = None;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            writer
                .write_all(b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("AUTH PLAIN ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(command[11..].trim())
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|byte| *byte == 0)
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            if let [_, user, password] = parts.as_slice() {
                login = Some((user.clone(), password.clone()));
                writer.write_all(b"235 ok\r\n").await?;
            } else {
                writer.write_all(b"535 bad\r\n").await?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            writer.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            writer.write_all(b"250 ok\r\n").await?;
        } else if upper == "DATA" {
            writer.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            let _ = sender.send(TlsMail {
                login: login.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            writer.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            writer.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            writer.write_all(b"250 ok\r\n").await?;
        } else {
            writer.write_all(b"502 not implemented\r\n").await?;
        }
    }
}

/// Publishes a verified address for a new user, then an OUTBID for them;
/// returns the user's address.
async fn contact_then_outbid(app: &TestApp) -> String {
    let bus = bus::for_process(&app.config).unwrap();
    let user = Uuid::now_v7();
    let email = format!("dana-{}@example.test", user.simple());
    let contact = pb::BusUserEvent {
        user_id: user.to_string(),
        event_time: None,
        kind: Some(pb::bus_user_event::Kind::ContactChanged(
            pb::BusUserContactChanged {
                email: email.clone(),
                display_name: "Dana".to_owned(),
            },
        )),
    };
    bus.publish(&[Envelope::new(
        "user",
        TOPIC_USER,
        user.to_string(),
        now_ms(),
        &contact,
    )])
    .await
    .unwrap();
    bus.publish(&[outbid(&Uuid::now_v7().to_string(), 1, user, "9.00")])
        .await
        .unwrap();
    email
}

async fn email_over_tls(implicit: bool, login: Option<(&str, &str)>) {
    let data = tempfile::tempdir().unwrap();
    let (tls, ca_file) = private_ca(data.path());
    let TlsSink {
        port, mut received, ..
    } = tls_smtp_sink(tls, implicit).await;
    let login = login.map(|(user, password)| (user.to_owned(), password.to_owned()));
    let credentials = login.clone();
    let app = spawn_app_with(Backend::Sqlite, move |config: &mut Config| {
        config.notification.smtp = Some(SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            tls: if implicit {
                SmtpTls::Tls
            } else {
                SmtpTls::Starttls
            },
            extra_ca_file: Some(ca_file),
            from_address: "Auctions <no-reply@auction.test>".to_owned(),
            username: credentials.as_ref().map(|(user, _)| user.clone()),
            password: credentials
                .as_ref()
                .map(|(_, password)| auction_platform::config::Secret::new(password.clone())),
            timeout_ms: 5_000,
        });
        config.notification.email_retry_delays_ms = vec![50, 100, 200, 400, 800, 1_600];
    })
    .await;
    let email = contact_then_outbid(&app).await;
    let mail = tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("an e-mail over TLS within the timeout")
        .unwrap();
    // The sink takes MAIL (and AUTH) only inside TLS: the message is here,
    // so it and the login came encrypted.
    assert_eq!(mail.to, vec![email]);
    assert_eq!(mail.login, login);
    assert!(
        mail.data.contains("Subject: You have been outbid on Lamp"),
        "{}",
        mail.data
    );
    app.stop().await;
}

// Proves e-mail reaches a relay that requires STARTTLS, with a certificate
// of a private CA trusted through notification.smtp.extra_ca_file, and that
// the relay login is sent only inside TLS.
#[tokio::test]
async fn email_over_starttls_with_login() {
    email_over_tls(false, Some(("mesh", "relay secret"))).await;
}

// Proves e-mail reaches a relay speaking TLS from the first byte (implicit
// TLS) with a certificate of a private CA.
#[tokio::test]
async fn email_over_implicit_tls() {
    email_over_tls(true, None).await;
}

// Proves a relay whose certificate chains to no trusted root gets no e-mail:
// the client breaks off the TLS handshake (no extra_ca_file here, and the
// private CA is in no system store), and nothing is sent in clear instead.
#[tokio::test]
async fn untrusted_relay_certificate_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let (tls, _not_trusted) = private_ca(data.path());
    let mut sink = tls_smtp_sink(tls, true).await;
    let port = sink.port;
    let app = spawn_app_with(Backend::Sqlite, move |config: &mut Config| {
        config.notification.smtp = Some(SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            tls: SmtpTls::Tls,
            extra_ca_file: None,
            from_address: "Auctions <no-reply@auction.test>".to_owned(),
            username: None,
            password: None,
            timeout_ms: 5_000,
        });
        config.notification.email_retry_delays_ms = vec![50, 100, 200, 400, 800, 1_600];
    })
    .await;
    contact_then_outbid(&app).await;
    tokio::time::timeout(WAIT, sink.refused_handshakes.recv())
        .await
        .expect("a refused handshake within the timeout")
        .unwrap();
    assert!(sink.received.try_recv().is_err());
    app.stop().await;
}

// Proves a relay login over plain SMTP (tls = none) is refused at start,
// naming the key and why, while the same login over STARTTLS is accepted.
#[test]
fn relay_login_over_plain_smtp_is_refused() {
    let mut config = Config::embedded_default();
    config.notification.smtp = Some(SmtpConfig {
        host: "mail.example.test".to_owned(),
        port: 25,
        tls: SmtpTls::None,
        extra_ca_file: None,
        from_address: "no-reply@auction.test".to_owned(),
        username: Some("mesh".to_owned()),
        password: Some(auction_platform::config::Secret::new("secret".to_owned())),
        timeout_ms: 5_000,
    });
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("notification.smtp.tls"), "{error}");
    assert!(error.contains("in clear"), "{error}");
    if let Some(smtp) = config.notification.smtp.as_mut() {
        smtp.tls = SmtpTls::Starttls;
        smtp.port = 587;
    }
    config.validate().unwrap();
}
