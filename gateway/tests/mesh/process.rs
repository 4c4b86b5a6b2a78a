//! The `auctiond` binary as a process: it starts, serves, stops on SIGTERM
//! with exit code 0 within 5 s, and finds its data again after a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auction_proto::v1::ListCategoriesRequest;
use auction_proto::v1::catalog_service_client::CatalogServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A running `auctiond dev` and the address it printed.
struct Auctiond {
    child: Child,
    url: String,
}

fn start(data_dir: &std::path::Path) -> Auctiond {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn auctiond");
    let stdout = child.stdout.take().expect("stdout");
    // The first line says where it listens; reading it is the readiness signal.
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Auctiond { child, url }
}

impl Auctiond {
    /// Sends SIGTERM and returns the exit status and how long it took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("auctiond did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn category_ids(url: &str) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connect to auctiond");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    CatalogServiceClient::new(channel)
        .list_categories(ListCategoriesRequest::default())
        .await
        .expect("list categories")
        .into_inner()
        .categories
        .into_iter()
        .map(|category| category.category_id)
        .collect()
}

// Proves SIGTERM stops `auctiond dev` with exit code 0 within 5 s, and that
// a restart on the same data folder serves the same data (ids generated at
// first start come back, so nothing was re-seeded).
#[tokio::test]
async fn sigterm_then_restart_keeps_data() {
    let data = tempfile::tempdir().unwrap();
    let first = start(data.path());
    let ids_before = category_ids(&first.url).await;
    assert!(!ids_before.is_empty());
    let (status, took) = first.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    for service in ["users", "catalog", "bidding", "payment", "notification"] {
        assert!(
            data.path().join(format!("{service}.db")).is_file(),
            "{service}.db"
        );
    }

    let second = start(data.path());
    let ids_after = category_ids(&second.url).await;
    assert_eq!(ids_before, ids_after);
    let (status, _) = second.terminate();
    assert!(status.success());
}

async fn serve_config(dir: &std::path::Path, redis_url: &str) -> std::path::PathBuf {
    let postgres_url = auction_testkit::fresh_postgres_database().await;
    let endpoints = auction_testkit::etcd_endpoints()
        .iter()
        .map(|endpoint| format!("\"{endpoint}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Production reads its keys from files; it never generates them.
    let signing_key = dir.join("token-signing.pem");
    let service_key = dir.join("service.pem");
    std::fs::write(&signing_key, auction_platform::auth::generate_pem()).unwrap();
    std::fs::write(&service_key, auction_platform::auth::generate_pem()).unwrap();
    let text = format!(
        "[server]\nlisten_address = \"127.0.0.1:0\"\n\
         [storage]\npostgres_url = \"{postgres_url}\"\n\
         [redis]\nurl = \"{redis_url}\"\n\
         [etcd]\nendpoints = [{endpoints}]\nkey_prefix = \"/test/{prefix}\"\n\
         [auth]\nsigning_key_file = \"{}\"\nservice_key_file = \"{}\"\n",
        signing_key.display(),
        service_key.display(),
        prefix = uuid::Uuid::now_v7().simple(),
    );
    let path = dir.join("auctiond.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// Proves `auctiond serve --config` runs every service on PostgreSQL with the
// configured Redis and etcd, and stops cleanly on SIGTERM.
#[tokio::test]
async fn serve_with_postgres_redis_and_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), &auction_testkit::redis_url()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .to_owned();
    let auctiond = Auctiond { child, url };
    assert!(!category_ids(&auctiond.url).await.is_empty());
    let (status, _) = auctiond.terminate();
    assert!(status.success());
}

// Proves an unreachable Redis stops start-up with a message naming its key,
// and a bad value does too, before anything listens.
#[tokio::test]
async fn unreachable_backend_or_bad_value_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let config = serve_config(dir.path(), "redis://127.0.0.1:1").await;
    let output = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("AUCTION_TELEMETRY__LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("redis.url"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("AUCTION_BIDDING__SHARD_COUNT", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bidding.shard_count"), "{stderr}");
}
