//! The durable log's fencing, on both backends: an append from an epoch
//! lower than the latest is refused and changes nothing (also when
//! PostgreSQL first tried the group in one statement); in a group commit
//! each shard's batch gets its own answer.

use auction_bidding::log::{Batch, EventRow, GroupsWritten, Log, LogError, NewAuction};
use auction_platform::config::{Config, Secret, StorageBackend};
use auction_platform::{Database, MeshService};
use uuid::Uuid;

async fn open(backend: StorageBackend, data: &tempfile::TempDir) -> Log {
    let mut config = Config::embedded_default();
    config.storage.data_dir = data.path().to_owned();
    if backend == StorageBackend::Postgres {
        config.storage.backend = StorageBackend::Postgres;
        config.storage.postgres_url = Some(Secret::new(
            auction_testkit::fresh_postgres_database().await,
        ));
    }
    let database = Database::open(
        &config.storage,
        auction_bidding::Service::SCHEMA,
        auction_bidding::Service::migrations(),
    )
    .await
    .expect("open the bidding database");
    Log::new(database)
}

fn batch_with_event(auction_id: Uuid, seq: u64, create: bool) -> Batch {
    let mut batch = Batch::default();
    if create {
        batch.new_auctions.push(NewAuction {
            auction_id,
            spec: "{}".to_owned(),
            metadata: "{}".to_owned(),
            status: "open",
            finished: false,
            created_at_ms: 0,
        });
    }
    batch.events.push(EventRow {
        auction_id,
        seq,
        at_ms: 0,
        event: format!("{{\"seq\":{seq}}}"),
    });
    batch
}

async fn fencing(backend: StorageBackend) {
    let data = tempfile::tempdir().unwrap();
    let log = open(backend, &data).await;
    let auction = Uuid::now_v7();
    log.append(3, 2, &batch_with_event(auction, 0, true))
        .await
        .expect("epoch 2 appends");
    // A deposed leader (epoch 1) is refused, and its event is not in the log.
    let refused = log
        .append(3, 1, &batch_with_event(auction, 1, false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            LogError::Fenced {
                shard: 3,
                epoch: 1,
                current: 2
            }
        ),
        "{refused:?}"
    );
    assert_eq!(log.events_from(auction, 0, 10).await.unwrap().len(), 1);
    // The same epoch goes on; a newer one takes over and fences epoch 2.
    log.append(3, 2, &batch_with_event(auction, 1, false))
        .await
        .expect("epoch 2 again");
    log.append(3, 3, &batch_with_event(auction, 2, false))
        .await
        .expect("epoch 3 takes over");
    let deposed = log
        .append(3, 2, &batch_with_event(auction, 3, false))
        .await
        .unwrap_err();
    assert!(
        matches!(deposed, LogError::Fenced { current: 3, .. }),
        "{deposed:?}"
    );
    assert_eq!(log.current_epoch(3).await.unwrap(), 3);
    // Other shards are fenced independently.
    log.append(4, 1, &batch_with_event(Uuid::now_v7(), 0, true))
        .await
        .expect("shard 4 has its own epoch");
    assert_eq!(log.events_from(auction, 0, 10).await.unwrap().len(), 3);
    // PostgreSQL wrote each landed group in one statement; a refused one
    // went back to the statements one by one, which found the fence, and
    // wrote nothing.
    let (together, stepwise) = match backend {
        StorageBackend::Postgres => (4, 0),
        StorageBackend::Sqlite => (0, 4),
    };
    assert_eq!(log.groups_written(), GroupsWritten { together, stepwise });
}

// Proves fencing on SQLite.
#[tokio::test]
async fn fencing_sqlite() {
    fencing(StorageBackend::Sqlite).await;
}

// Proves fencing on PostgreSQL.
#[tokio::test]
async fn fencing_postgres() {
    fencing(StorageBackend::Postgres).await;
}

/// Batches of several shards handed to the group committer together: each
/// gets its own answer. A fenced shard is refused alone, and a batch the
/// database rejects (an event sequence already in the log) fails alone:
/// the others land all the same.
async fn group_commit(backend: StorageBackend) {
    let data = tempfile::tempdir().unwrap();
    let log = open(backend, &data).await;
    let existing = Uuid::now_v7();
    log.append(5, 3, &batch_with_event(existing, 0, true))
        .await
        .expect("epoch 3 leads shard 5");
    let (fresh_six, fresh_seven) = (Uuid::now_v7(), Uuid::now_v7());
    // Submitted before any is awaited: they wait for the committer together.
    let deposed = log.submit(5, 2, batch_with_event(existing, 1, false));
    let six = log.submit(6, 1, batch_with_event(fresh_six, 0, true));
    let duplicate = log.submit(5, 3, batch_with_event(existing, 0, false));
    let seven = log.submit(7, 1, batch_with_event(fresh_seven, 0, true));
    let (_, deposed) = deposed.await.expect("answered");
    let (six_batch, six) = six.await.expect("answered");
    let (_, duplicate) = duplicate.await.expect("answered");
    let (_, seven) = seven.await.expect("answered");
    assert!(
        matches!(
            deposed,
            Err(LogError::Fenced {
                shard: 5,
                epoch: 2,
                current: 3
            })
        ),
        "{deposed:?}"
    );
    assert!(
        matches!(duplicate, Err(LogError::Database(_))),
        "{duplicate:?}"
    );
    six.expect("shard 6 lands");
    seven.expect("shard 7 lands");
    // The batch comes back with its answer.
    assert_eq!(six_batch.new_auctions.len(), 1);
    assert_eq!(log.events_from(existing, 0, 10).await.unwrap().len(), 1);
    assert_eq!(log.events_from(fresh_six, 0, 10).await.unwrap().len(), 1);
    assert_eq!(log.events_from(fresh_seven, 0, 10).await.unwrap().len(), 1);
    assert_eq!(log.current_epoch(5).await.unwrap(), 3);
    assert_eq!(log.current_epoch(6).await.unwrap(), 1);
}

// Proves per-shard answers of a group commit on SQLite.
#[tokio::test]
async fn group_commit_sqlite() {
    group_commit(StorageBackend::Sqlite).await;
}

// Proves per-shard answers of a group commit on PostgreSQL.
#[tokio::test]
async fn group_commit_postgres() {
    group_commit(StorageBackend::Postgres).await;
}
