//! The durable log's fencing, on both backends: an append from an epoch
//! lower than the latest is refused and changes nothing.

use auction_bidding::log::{Batch, EventRow, Log, LogError, NewAuction};
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
