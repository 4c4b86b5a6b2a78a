//! kill -9 of the `auctiond` process: acknowledged bids survive, retries get
//! their original answers, and the outcome after restart is the engine's
//! outcome over what the log holds (every acknowledged bid included).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use auction_platform::auth::{AccessGrant, Keys, Role};
use auction_platform::config::Config;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use auction_testkit::with_token;
use tonic::transport::Channel;
use uuid::Uuid;

/// A running `auctiond` and where it listens.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(arguments: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_auctiond"))
            .args(arguments)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn auctiond");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// SIGKILL: no drain, no flush, nothing.
    fn kill_9(mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.child.wait().expect("reap");
    }

    /// A client, once the server answers: the first line comes when the
    /// listener is bound, before every service is mounted (and before the
    /// dev keys exist), so wait for an answer, bounded.
    async fn client(&self) -> BiddingServiceClient<Channel> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.url.clone()).unwrap();
        for _ in 0..200 {
            if let Ok(channel) = endpoint.connect().await {
                let mut client = BiddingServiceClient::new(channel);
                if client
                    .get_server_time(pb::GetServerTimeRequest::default())
                    .await
                    .is_ok()
                {
                    return client;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("auctiond at {} never answered", self.url);
    }
}

/// The keys `auctiond` generated into `data_dir/keys` on first start, to
/// mint tokens as the user service would.
fn keys(data_dir: &Path) -> Keys {
    let mut config = Config::embedded_default();
    config.storage.data_dir = data_dir.to_owned();
    config.auth.generate_missing_keys = true;
    Keys::load(&config).expect("the generated keys")
}

fn token(keys: &Keys, user_id: Uuid, role: Role) -> String {
    let grant = AccessGrant {
        user_id,
        session_id: Some(Uuid::now_v7()),
        roles: [role].into_iter().collect(),
        api_key: None,
        second_factor_verified: true,
    };
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    keys.issue_access_token(&grant, now_ms).unwrap().token
}

fn usd(amount: String) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount,
    }
}

async fn create_english(
    client: &mut BiddingServiceClient<Channel>,
    admin: &str,
    seller: Uuid,
) -> String {
    let now = std::time::SystemTime::now();
    let request = pb::CreateAuctionRequest {
        request_id: format!("create-{}", Uuid::now_v7()),
        auction_id: Uuid::now_v7().to_string(),
        seller_id: seller.to_string(),
        title: "crash test".to_owned(),
        parameters: Some(pb::AuctionParameters {
            format: pb::AuctionFormat::English as i32,
            format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                pb::EnglishParameters {
                    starting_price: Some(usd("1.00".to_owned())),
                    ..pb::EnglishParameters::default()
                },
            )),
        }),
        start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(1))),
        end_time: Some(prost_types::Timestamp::from(
            now + Duration::from_secs(3_600),
        )),
        ..pb::CreateAuctionRequest::default()
    };
    client
        .create_auction(with_token(request, admin))
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state")
        .auction_id
}

fn max_bid(
    auction_id: &str,
    request_id: &str,
    amount: String,
    token: &str,
) -> tonic::Request<pb::SetMaxBidRequest> {
    with_token(
        pb::SetMaxBidRequest {
            request_id: request_id.to_owned(),
            auction_id: auction_id.to_owned(),
            max_amount: Some(usd(amount)),
        },
        token,
    )
}

// Proves a retry with the same request_id after the server was killed -9 and
// restarted returns the original answer (embedded default, SQLite).
#[tokio::test]
async fn retry_after_kill_9_returns_the_original_answer() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let arguments = [
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.as_str(),
    ];
    let server = Server::start(&arguments);
    let mut client = server.client().await;
    let keys = keys(data.path());
    let admin = token(&keys, Uuid::now_v7(), Role::Admin);
    let bidder = token(&keys, Uuid::now_v7(), Role::Bidder);
    let auction_id = create_english(&mut client, &admin, Uuid::now_v7()).await;
    let original = client
        .set_max_bid(max_bid(
            &auction_id,
            "bid-before-crash",
            "42.00".to_owned(),
            &bidder,
        ))
        .await
        .unwrap()
        .into_inner();
    server.kill_9();

    let server = Server::start(&arguments);
    let mut client = server.client().await;
    let replayed = client
        .set_max_bid(max_bid(
            &auction_id,
            "bid-before-crash",
            "42.00".to_owned(),
            &bidder,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, original, "the original answer, not a second bid");
    let state = client
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: auction_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert_eq!(
        state.sequence,
        original.state.unwrap().sequence,
        "nothing was applied twice"
    );
    server.kill_9();
}

/// What a bidder was told.
struct Acknowledged {
    request_id: String,
    token: Arc<String>,
    amount: String,
    answer: Result<pb::SetMaxBidResponse, (tonic::Code, String)>,
}

// Proves, under load with real PostgreSQL and the server killed -9 mid-flow,
// that every acknowledged bid (accepted or refused) is in the log after the
// restart (a retry gets its original answer), and that the auction's
// outcome equals the engine's, recomputed from the commands in the log.
#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_bid() {
    let data = tempfile::tempdir().unwrap();
    let database_url = auction_testkit::fresh_postgres_database().await;
    let config_path = data.path().join("auctiond.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten_address = \"127.0.0.1:0\"\n[storage]\npostgres_url = \"{database_url}\"\ndata_dir = \"{}\"\n[auth]\ngenerate_missing_keys = true\n[bidding]\nshard_count = 4\n",
            data.path().display()
        ),
    )
    .unwrap();
    let config_text = config_path.to_str().unwrap().to_owned();
    let arguments = ["serve", "--config", config_text.as_str()];
    let server = Server::start(&arguments);
    let mut client = server.client().await;
    let keys = keys(data.path());
    let admin = token(&keys, Uuid::now_v7(), Role::Admin);
    let auction_id = create_english(&mut client, &admin, Uuid::now_v7()).await;

    // Four bidders raise their maximums concurrently until the server dies.
    let (acknowledged_sender, mut acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let mut bidders = Vec::new();
    for lane in 0..4_u32 {
        let token = Arc::new(token(&keys, Uuid::now_v7(), Role::Bidder));
        let mut client = server.client().await;
        let auction_id = auction_id.clone();
        let sender = acknowledged_sender.clone();
        bidders.push(tokio::spawn(async move {
            for step in 0..10_000_u32 {
                let amount = format!("{}.00", 10 + step * 4 + lane);
                let request_id = format!("lane{lane}-{step}");
                match client
                    .set_max_bid(max_bid(&auction_id, &request_id, amount.clone(), &token))
                    .await
                {
                    Ok(response) => {
                        let _ = sender.send(Acknowledged {
                            request_id,
                            token: Arc::clone(&token),
                            amount,
                            answer: Ok(response.into_inner()),
                        });
                    }
                    Err(status)
                        if status.code() == tonic::Code::FailedPrecondition
                            || status.code() == tonic::Code::InvalidArgument =>
                    {
                        let _ = sender.send(Acknowledged {
                            request_id,
                            token: Arc::clone(&token),
                            amount,
                            answer: Err((status.code(), status.message().to_owned())),
                        });
                    }
                    // The server is gone: this lane stops.
                    Err(_) => return,
                }
            }
        }));
    }
    drop(acknowledged_sender);
    // Let at least 200 answers come back, then kill it mid-flow.
    let mut answers = Vec::new();
    while answers.len() < 200 {
        let next = tokio::time::timeout(Duration::from_secs(60), acknowledged.recv())
            .await
            .expect("answers keep coming");
        answers.push(next.expect("bidders are running"));
    }
    server.kill_9();
    for bidder in bidders {
        bidder.await.unwrap();
    }
    while let Ok(late) = acknowledged.try_recv() {
        answers.push(late);
    }
    assert!(
        answers.iter().any(|answer| answer.answer.is_ok()),
        "some bids were accepted"
    );

    let server = Server::start(&arguments);
    let mut client = server.client().await;
    // Every acknowledged answer is durable: the retry gets it back unchanged.
    for answer in &answers {
        let retried = client
            .set_max_bid(max_bid(
                &auction_id,
                &answer.request_id,
                answer.amount.clone(),
                &answer.token,
            ))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| (status.code(), status.message().to_owned()));
        assert_eq!(
            retried, answer.answer,
            "request {} after the restart",
            answer.request_id
        );
    }

    // The outcome: rebuild from the log's commands with the engine itself.
    let state = client
        .get_auction_state(pb::GetAuctionStateRequest {
            auction_id: auction_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    let mut options: sqlx::postgres::PgConnectOptions = database_url.parse().unwrap();
    options = options.options([("search_path", "bidding")]);
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let spec: String = sqlx::query_scalar("SELECT spec FROM auctions WHERE auction_id = $1")
        .bind(Uuid::parse_str(&auction_id).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event FROM auction_events WHERE auction_id = $1 ORDER BY seq")
            .bind(Uuid::parse_str(&auction_id).unwrap())
            .fetch_all(&pool)
            .await
            .unwrap();
    let spec: auction_engine::AuctionSpec = serde_json::from_str(&spec).unwrap();
    let mut replayed = auction_engine::Auction::new(spec.clone()).unwrap();
    let mut recomputed = auction_engine::Auction::new(spec).unwrap();
    let mut scratch = Vec::new();
    let mut accepted_in_log = 0;
    for text in &events {
        let event: auction_engine::Event = serde_json::from_str(text).unwrap();
        replayed.apply_event(&event).unwrap();
        // Re-issue each logged bid as a command: the engine must decide the
        // same way from the commands alone.
        match event.kind {
            auction_engine::EventKind::BidAccepted {
                request_id,
                bidder,
                max_amount,
                received_at,
                ..
            } => {
                accepted_in_log += 1;
                let command = auction_engine::Command {
                    request_id,
                    actor: auction_engine::Actor::bidder(bidder),
                    received_at,
                    action: auction_engine::Action::SetMaxBid {
                        max_amount,
                        lot: None,
                    },
                };
                recomputed.apply(command, event.at, &mut scratch).unwrap();
            }
            _ => {
                let tick = auction_engine::Command::tick(event.at);
                if recomputed
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= event.at)
                {
                    recomputed.apply(tick, event.at, &mut scratch).unwrap();
                }
            }
        }
    }
    let acknowledged_accepted = answers
        .iter()
        .filter(|answer| answer.answer.is_ok())
        .count();
    assert!(
        accepted_in_log >= acknowledged_accepted,
        "{accepted_in_log} accepted in the log, {acknowledged_accepted} acknowledged"
    );
    assert_eq!(
        replayed.view(),
        recomputed.view(),
        "the engine's outcome from the commands equals the log's"
    );
    let auction_engine::FormatView::English { price, .. } = replayed.view().format else {
        panic!("English")
    };
    assert_eq!(
        state.current_price.map(|money| money.amount),
        price.map(|price| price.amount.to_string())
    );
    assert_eq!(state.sequence, replayed.next_seq());
    server.kill_9();
}
