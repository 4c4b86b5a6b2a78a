//! The Redis Streams bus against the suite's real Redis
//! (`MESH_TEST_REDIS_URL`, default 127.0.0.1:63799), each test under its own
//! stream prefix, and the outbox relay on SQLite and PostgreSQL.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use auction_platform::Database;
use auction_platform::Shutdown;
use auction_platform::bus::in_process::InProcessBus;
use auction_platform::bus::outbox::{self, Relay, RelayOptions};
use auction_platform::bus::redis::RedisStreamsBus;
use auction_platform::bus::{BoxFuture, Envelope, EventBus, HandleError, Handler, Subscription};
use auction_platform::config::RedisConfig;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn redis_url() -> String {
    std::env::var("MESH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799".to_owned())
}

fn config(consumer: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: Some(redis_url()),
        stream_prefix: prefix.to_owned(),
        consumer_name: Some(consumer.to_owned()),
        claim_idle_ms: 300,
        max_deliveries: 3,
        ..RedisConfig::default()
    }
}

fn envelope(key: &str) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::now_v7(),
        topic: "t".to_owned(),
        key: key.to_owned(),
        occurred_at_ms: 0,
        payload_type: "test".to_owned(),
        payload: key.as_bytes().to_vec(),
        producer: "test".to_owned(),
    }
}

/// Reports every message it sees; fails while `failing` is set; never
/// returns (a consumer that hangs, like a dead process) while `hang` is set.
struct Probe {
    seen: mpsc::UnboundedSender<(String, String)>,
    name: String,
    failing: bool,
    hang: bool,
    calls: AtomicU32,
}

impl Handler for Probe {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let _ = self.seen.send((self.name.clone(), envelope.key.clone()));
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.failing {
                Err("refused".into())
            } else {
                Ok(())
            }
        })
    }
}

fn probe(
    name: &str,
    failing: bool,
    hang: bool,
) -> (Arc<Probe>, mpsc::UnboundedReceiver<(String, String)>) {
    let (seen, receiver) = mpsc::unbounded_channel();
    (
        Arc::new(Probe {
            seen,
            name: name.to_owned(),
            failing,
            hang,
            calls: AtomicU32::new(0),
        }),
        receiver,
    )
}

async fn next(receiver: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(WAIT, receiver.recv())
        .await
        .expect("a message in time")
        .expect("open")
}

fn subscription(shutdown: &Shutdown) -> Subscription {
    Subscription {
        group: "g".to_owned(),
        topics: vec!["t".to_owned()],
        shutdown: shutdown.clone(),
    }
}

// Proves a message taken by a consumer that then hangs (a dead process) is
// reclaimed with XAUTOCLAIM by another consumer of the group after the idle
// timeout, and handled there.
#[tokio::test]
async fn a_dead_consumers_message_is_reclaimed() {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let shutdown = Shutdown::new();
    let dead_bus = RedisStreamsBus::new(&config("dead", &prefix)).unwrap();
    let (dead, mut dead_seen) = probe("dead", false, true);
    dead_bus.subscribe(subscription(&shutdown), dead);
    dead_bus.publish(&[envelope("m1")]).await.unwrap();
    assert_eq!(
        next(&mut dead_seen).await,
        ("dead".to_owned(), "m1".to_owned())
    );
    // A live consumer joins the same group and reclaims the stuck message.
    let live_bus = RedisStreamsBus::new(&config("live", &prefix)).unwrap();
    let (live, mut live_seen) = probe("live", false, false);
    live_bus.subscribe(subscription(&shutdown), live);
    assert_eq!(
        next(&mut live_seen).await,
        ("live".to_owned(), "m1".to_owned())
    );
    // New messages keep flowing to the group.
    live_bus.publish(&[envelope("m2")]).await.unwrap();
    assert_eq!(next(&mut live_seen).await.1, "m2");
    shutdown.trigger();
}

// Proves a message whose handler keeps failing is delivered at most
// `max_deliveries` times, then lands in the dead-letter stream unchanged and
// is acknowledged, while later messages still get through.
#[tokio::test]
async fn a_poison_message_is_dead_lettered() {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let shutdown = Shutdown::new();
    let bus = RedisStreamsBus::new(&config("only", &prefix)).unwrap();
    let (failing, mut seen) = probe("only", true, false);
    bus.subscribe(
        subscription(&shutdown),
        Arc::clone(&failing) as Arc<dyn Handler>,
    );
    let poison = envelope("poison");
    bus.publish(std::slice::from_ref(&poison)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut seen).await.1, "poison");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dead = bus.dead_letters("t").await.unwrap();
        if !dead.is_empty() {
            assert_eq!(dead, vec![poison.clone()]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        failing.calls.load(Ordering::SeqCst),
        3,
        "delivered exactly max_deliveries times"
    );
    shutdown.trigger();
}

/// Waits until every outbox row is marked published; `what` on timeout.
async fn all_marked_published(database: &Database, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while outbox::unpublished_count(database).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn relay_publishes_in_order(database: Database) {
    let shutdown = Shutdown::new();
    let bus = Arc::new(InProcessBus::new(3));
    let (handler, mut seen) = probe("consumer", false, false);
    bus.subscribe(subscription(&shutdown), handler);
    let relay = Relay::spawn(
        database.clone(),
        bus.clone(),
        shutdown.clone(),
        RelayOptions::default(),
    );
    let envelopes: Vec<Envelope> = (0..20).map(|index| envelope(&index.to_string())).collect();
    match &database {
        Database::Postgres(pool) => {
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage(&mut transaction, &envelopes[..10])
                .await
                .unwrap();
            transaction.commit().await.unwrap();
            // A rolled-back transaction publishes nothing.
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage_postgres(&mut transaction, &[envelope("rolled back")])
                .await
                .unwrap();
            transaction.rollback().await.unwrap();
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage(&mut transaction, &envelopes[10..])
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
        Database::Sqlite(pool) => {
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage(&mut transaction, &envelopes[..10])
                .await
                .unwrap();
            transaction.commit().await.unwrap();
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage_sqlite(&mut transaction, &[envelope("rolled back")])
                .await
                .unwrap();
            transaction.rollback().await.unwrap();
            let mut transaction = pool.begin().await.unwrap();
            outbox::stage(&mut transaction, &envelopes[10..])
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
    }
    relay.wake();
    for index in 0..20 {
        assert_eq!(next(&mut seen).await.1, index.to_string());
    }
    all_marked_published(&database, "rows not marked published in time").await;
    assert!(
        seen.try_recv().is_err(),
        "nothing else (the rolled-back row) was published"
    );
    shutdown.trigger();
}

// Proves the relay publishes committed outbox rows in order, never a
// rolled-back one, and marks them published (SQLite).
#[tokio::test]
async fn relay_publishes_committed_rows_in_order_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_outbox(dir.path()).await;
    relay_publishes_in_order(Database::Sqlite(pool)).await;
}

async fn sqlite_outbox(dir: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("outbox.db"))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(outbox::SQLITE_MIGRATION)
        .execute(&pool)
        .await
        .unwrap();
    pool
}

async fn stage_committed(pool: &sqlx::SqlitePool, envelopes: &[Envelope]) {
    let mut transaction = pool.begin().await.unwrap();
    outbox::stage(&mut transaction, envelopes).await.unwrap();
    transaction.commit().await.unwrap();
}

// Proves the SQLite relay's deferred marks: rows are published at once but
// marked only when the mark interval allows (here: only at shutdown), a
// relay started after a crash before the mark publishes them again (at
// least once, never lost), and a clean stop marks everything it published.
#[tokio::test]
async fn sqlite_relay_defers_marks_and_a_crash_republishes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_outbox(dir.path()).await;
    let database = Database::Sqlite(pool.clone());
    let patient = RelayOptions {
        poll_interval: Duration::from_secs(3_600),
        mark_interval: Duration::from_secs(3_600),
        ..RelayOptions::default()
    };
    let envelopes: Vec<Envelope> = (0..30).map(|index| envelope(&index.to_string())).collect();

    let first_shutdown = Shutdown::new();
    let first_bus = Arc::new(InProcessBus::new(3));
    let (handler, mut first_seen) = probe("first", false, false);
    first_bus.subscribe(subscription(&first_shutdown), handler);
    let first = Relay::spawn(
        database.clone(),
        first_bus,
        first_shutdown.clone(),
        patient.clone(),
    );
    // The first round marks at once (no mark yet); later rounds wait.
    stage_committed(&pool, &envelopes[..10]).await;
    first.wake();
    for index in 0..10 {
        assert_eq!(next(&mut first_seen).await.1, index.to_string());
    }
    all_marked_published(&database, "the first round was not marked").await;
    stage_committed(&pool, &envelopes[10..20]).await;
    first.wake();
    stage_committed(&pool, &envelopes[20..]).await;
    first.wake();
    for index in 10..30 {
        assert_eq!(next(&mut first_seen).await.1, index.to_string());
    }
    assert_eq!(
        outbox::unpublished_count(&database).await.unwrap(),
        20,
        "published rows wait for the mark interval"
    );

    // A relay started now stands for the process restarted after a crash:
    // the unmarked rows are published again, in order, and nothing else
    // (its first round marks them).
    let second_shutdown = Shutdown::new();
    let second_bus = Arc::new(InProcessBus::new(3));
    let (handler, mut second_seen) = probe("second", false, false);
    second_bus.subscribe(subscription(&second_shutdown), handler);
    let _second = Relay::spawn(
        database.clone(),
        second_bus,
        second_shutdown.clone(),
        patient,
    );
    for index in 10..30 {
        assert_eq!(next(&mut second_seen).await.1, index.to_string());
    }
    second_shutdown.trigger();
    // The second relay marks them (its first round, or its shutdown).
    all_marked_published(&database, "the restarted relay did not mark").await;

    // A clean stop marks what was published.
    let more: Vec<Envelope> = (30..40).map(|index| envelope(&index.to_string())).collect();
    stage_committed(&pool, &more).await;
    first.wake();
    for index in 30..40 {
        assert_eq!(next(&mut first_seen).await.1, index.to_string());
    }
    assert_eq!(outbox::unpublished_count(&database).await.unwrap(), 10);
    first_shutdown.trigger();
    all_marked_published(&database, "shutdown did not mark the published rows").await;
    assert!(
        first_seen.try_recv().is_err(),
        "the first relay published nothing twice"
    );
    assert!(
        second_seen.try_recv().is_err(),
        "the second relay published nothing else"
    );
}

// Proves the same on PostgreSQL (in a schema of its own).
#[tokio::test]
async fn relay_publishes_committed_rows_in_order_postgres() {
    let url = std::env::var("MESH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:54329/postgres".to_owned());
    let schema = format!("outbox_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("the suite's PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&admin)
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    sqlx::raw_sql(outbox::POSTGRES_MIGRATION)
        .execute(&pool)
        .await
        .unwrap();
    relay_publishes_in_order(Database::Postgres(pool)).await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// Records each batch it is handed and reports each message it handled;
/// the message keyed "bad" fails while `bad_failures` lasts.
struct Batcher {
    batches: std::sync::Mutex<Vec<Vec<String>>>,
    handled: mpsc::UnboundedSender<String>,
    bad_failures: AtomicU32,
}

impl Handler for Batcher {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            if envelope.key == "bad"
                && self
                    .bad_failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok()
            {
                return Err("bad, this time".into());
            }
            let _ = self.handled.send(envelope.key.clone());
            Ok(())
        })
    }

    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Vec<Result<(), HandleError>>> {
        Box::pin(async move {
            self.batches.lock().unwrap().push(
                envelopes
                    .iter()
                    .map(|envelope| envelope.key.clone())
                    .collect(),
            );
            let mut results = Vec::new();
            for envelope in envelopes {
                results.push(self.handle(envelope).await);
            }
            results
        })
    }
}

/// Messages published before the consumer starts reach it as one batch; the
/// one that failed inside the batch is delivered again alone and the others
/// are not delivered again.
async fn consumes_in_batches(bus: Arc<dyn EventBus>) {
    let keys = ["a", "b", "bad", "c", "d"];
    bus.publish(&keys.map(envelope)).await.unwrap();
    let (handled, mut received) = mpsc::unbounded_channel();
    let batcher = Arc::new(Batcher {
        batches: std::sync::Mutex::new(Vec::new()),
        handled,
        bad_failures: AtomicU32::new(1),
    });
    let shutdown = Shutdown::new();
    bus.subscribe(
        subscription(&shutdown),
        Arc::clone(&batcher) as Arc<dyn Handler>,
    );
    let mut seen = Vec::new();
    for _ in 0..keys.len() {
        seen.push(
            tokio::time::timeout(WAIT, received.recv())
                .await
                .expect("handled in time")
                .expect("open"),
        );
    }
    assert_eq!(seen, ["a", "b", "c", "d", "bad"]);
    assert_eq!(
        *batcher.batches.lock().unwrap(),
        vec![keys.map(str::to_owned).to_vec()],
        "one batch; the retry went through handle alone"
    );
    // Longer than the Redis claim idle time (300 ms): an unacknowledged
    // message would come back.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(received.try_recv().is_err(), "nothing handled twice");
    shutdown.trigger();
}

// Proves Redis Streams hands new entries over as a batch, acknowledges the
// handled ones, and reclaims the one that failed.
#[tokio::test]
async fn redis_consumes_in_batches() {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    consumes_in_batches(Arc::new(
        RedisStreamsBus::new(&config("batch", &prefix)).unwrap(),
    ))
    .await;
}

// Proves the same for the in-process bus.
#[tokio::test]
async fn in_process_consumes_in_batches() {
    consumes_in_batches(Arc::new(InProcessBus::new(3))).await;
}
