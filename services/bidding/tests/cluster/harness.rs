//! Three `auction-bidding` processes on one machine: their configuration,
//! their lives (start, SIGKILL, SIGSTOP/SIGCONT, restart on the same port)
//! and what etcd says about them.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use auction_engine::{AuctionSpec, AuctionView, FormatView, Money};
use auction_platform::auth::{AccessGrant, Keys, Role};
use auction_platform::config::Config;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// The lease of a shard leader in these tests (etcd's minimum is about 2 s).
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// A shard's leader as etcd says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub node: String,
    pub epoch: u64,
}

struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_auction-bidding"))
            .arg("--config")
            .arg(&self.config)
            .env("AUCTION_TELEMETRY__LOG_FORMAT", "text")
            .env("AUCTION_TELEMETRY__LOG_FILTER", "info,auction_bidding=info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

/// The cluster under test.
pub struct Harness {
    nodes: Mutex<Vec<Node>>,
    urls: Vec<(String, String)>,
    shard_count: u32,
    prefix: String,
    endpoints: Vec<String>,
    postgres_url: String,
    keys: Keys,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for node in self.nodes.lock().unwrap().iter_mut() {
            node.signal("CONT");
            node.kill();
        }
    }
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.set_timeout(Duration::from_secs(3));
    request
}

pub fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// An answer that says nothing about the request's fate: try again (same
/// request id) on another node.
pub fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::ResourceExhausted
    )
}

pub fn engine_leader(view: &AuctionView) -> Option<Uuid> {
    match &view.format {
        FormatView::English { leader, .. } => leader.map(|user| Uuid::from_u128(user.0)),
        _ => None,
    }
}

pub fn engine_price(view: &AuctionView) -> Option<String> {
    match &view.format {
        FormatView::English { price, .. } => {
            price.map(|price: Money| auction_bidding::convert::money_to_proto(price).amount)
        }
        _ => None,
    }
}

impl Harness {
    /// Starts `nodes` bidding processes with `shard_count` shards on a fresh
    /// database and a fresh etcd prefix.
    pub async fn start(nodes: usize, shard_count: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres_url = auction_testkit::fresh_postgres_database().await;
        let endpoints = auction_testkit::etcd_endpoints();
        let prefix = format!("/test/{}", Uuid::now_v7().simple());
        let signing_key = dir.path().join("token-signing.pem");
        let service_key = dir.path().join("service.pem");
        std::fs::write(&signing_key, auction_platform::auth::generate_pem()).unwrap();
        std::fs::write(&service_key, auction_platform::auth::generate_pem()).unwrap();
        let endpoint_list = endpoints
            .iter()
            .map(|endpoint| format!("\"{endpoint}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut started = Vec::new();
        let mut urls = Vec::new();
        for index in 0..nodes {
            let name = format!("node-{index}");
            let port = auction_testkit::free_port();
            let text = format!(
                "[server]\nlisten_address = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 1000\n\
                 [storage]\npostgres_url = \"{postgres_url}\"\nmax_connections = 4\n\
                 [redis]\nurl = \"{redis}\"\n\
                 [etcd]\nendpoints = [{endpoint_list}]\nlease_ttl_ms = {ttl}\nkey_prefix = \"{prefix}\"\n\
                 [bidding]\nshard_count = {shard_count}\nnode_id = \"{name}\"\n\
                 [auth]\nsigning_key_file = \"{}\"\nservice_key_file = \"{}\"\n",
                signing_key.display(),
                service_key.display(),
                redis = auction_testkit::redis_url(),
                ttl = LEASE_TTL.as_millis(),
            );
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, text).unwrap();
            let mut node = Node {
                name: name.clone(),
                port,
                config,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            urls.push((name, node.url()));
            node.start();
            started.push(node);
        }
        let config = Config::load(Config::production_default(), Some(&started[0].config)).unwrap();
        let keys = Keys::load(&config).unwrap();
        Self {
            nodes: Mutex::new(started),
            urls,
            shard_count,
            prefix,
            endpoints,
            postgres_url,
            keys,
            _dir: dir,
        }
    }

    pub fn token(&self, user_id: Uuid, roles: &[Role]) -> String {
        let grant = AccessGrant {
            user_id,
            session_id: Some(Uuid::now_v7()),
            roles: roles.iter().copied().collect(),
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
        self.keys.issue_access_token(&grant, now_ms).unwrap().token
    }

    pub fn client(&self, index: usize) -> BiddingServiceClient<Channel> {
        let (_, url) = &self.urls[index % self.urls.len()];
        let channel = Endpoint::from_shared(url.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        BiddingServiceClient::new(channel)
    }

    pub fn client_of(&self, node: &str) -> BiddingServiceClient<Channel> {
        let index = self.urls.iter().position(|(name, _)| name == node).unwrap();
        self.client(index)
    }

    pub fn any_other_node(&self, node: &str) -> String {
        self.urls
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| name != node)
            .unwrap()
    }

    pub fn log_of(&self, node: &str) -> String {
        let nodes = self.nodes.lock().unwrap();
        let node = nodes
            .iter()
            .find(|candidate| candidate.name == node)
            .unwrap();
        std::fs::read_to_string(&node.log).unwrap_or_default()
    }

    /// Calls `call` on node after node (starting at `start`) until it gets
    /// an answer that is not "try again", for at most 30 s.
    pub async fn until_answered<T, F, Fut>(
        &self,
        start: usize,
        mut call: F,
    ) -> Result<tonic::Response<T>, tonic::Status>
    where
        F: FnMut(BiddingServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = start;
        loop {
            match call(self.client(attempt)).await {
                Err(status) if is_retryable(&status) && Instant::now() < deadline => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                answer => return answer,
            }
        }
    }

    /// Sets `bidder`'s maximum on `auction_id` to `amount` USD through the
    /// cluster (retrying with the same request id); the state after it.
    pub async fn max_bid_until_answered(
        &self,
        auction_id: &str,
        bidder: Uuid,
        request_id: String,
        amount: u32,
    ) -> Result<pb::AuctionState, tonic::Status> {
        let token = self.token(bidder, &[Role::Bidder]);
        let request = pb::SetMaxBidRequest {
            request_id,
            auction_id: auction_id.to_owned(),
            max_amount: Some(usd(&amount.to_string())),
        };
        let response = self
            .until_answered(amount as usize, |mut client| {
                let request = with_token(request.clone(), &token);
                async move { client.set_max_bid(request).await }
            })
            .await?;
        Ok(response.into_inner().state.unwrap_or_default())
    }

    pub fn shard_of(&self, auction_id: &str) -> u32 {
        auction_bidding::shard::Shards::shard_of(
            Uuid::parse_str(auction_id).unwrap(),
            self.shard_count,
        )
    }

    async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect(&self.endpoints, None)
            .await
            .unwrap()
    }

    pub async fn leaders(&self) -> HashMap<u32, Leader> {
        let mut client = self.etcd().await;
        let response = client
            .get(
                format!("{}/leaders/", self.prefix),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let shard = kv.key_str().ok()?.rsplit('/').next()?.parse().ok()?;
                let node = kv.value_str().ok()?.split('\n').next()?.to_owned();
                Some((
                    shard,
                    Leader {
                        node,
                        epoch: u64::try_from(kv.create_revision()).ok()?,
                    },
                ))
            })
            .collect()
    }

    pub async fn leader_of(&self, shard: u32) -> Option<Leader> {
        self.leaders().await.remove(&shard)
    }

    pub async fn wait_until_every_shard_is_led(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            if leaders.len() == self.shard_count as usize {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {} shards are led: {leaders:?}",
                leaders.len(),
                self.shard_count
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every shard is led, only by `nodes`, each leading at
    /// least one and at most `at_most` shards.
    pub async fn wait_until_balanced(&self, nodes: &[&str], at_most: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            let mut counts: HashMap<String, u32> = HashMap::new();
            for leader in leaders.values() {
                *counts.entry(leader.node.clone()).or_default() += 1;
            }
            let stable = leaders.len() == self.shard_count as usize
                && counts.keys().all(|node| nodes.contains(&node.as_str()))
                && nodes.iter().all(|node| {
                    counts
                        .get(*node)
                        .is_some_and(|count| (1..=at_most).contains(count))
                });
            if stable {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not balanced over {nodes:?} (at most {at_most} each) after {timeout:?}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a node other than `before`'s leads `shard`.
    pub async fn wait_for_new_leader(
        &self,
        shard: u32,
        before: &Leader,
        timeout: Duration,
    ) -> Option<Leader> {
        let deadline = Instant::now() + timeout;
        let mut client = self.etcd().await;
        let key = format!("{}/leaders/{shard:05}", self.prefix);
        while Instant::now() < deadline {
            let response = client.get(key.clone(), None).await.unwrap();
            if let Some(kv) = response.kvs().first() {
                let node = kv
                    .value_str()
                    .unwrap()
                    .split('\n')
                    .next()
                    .unwrap()
                    .to_owned();
                if node != before.node {
                    return Some(Leader {
                        node,
                        epoch: u64::try_from(kv.create_revision()).unwrap(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn kill(&self, node: &str) {
        let mut nodes = self.nodes.lock().unwrap();
        nodes
            .iter_mut()
            .find(|candidate| candidate.name == node)
            .unwrap()
            .kill();
    }

    pub fn restart(&self, node: &str) {
        let mut nodes = self.nodes.lock().unwrap();
        let node = nodes
            .iter_mut()
            .find(|candidate| candidate.name == node)
            .unwrap();
        node.kill();
        node.start();
    }

    pub fn signal(&self, node: &str, signal: &str) {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .find(|candidate| candidate.name == node)
            .unwrap()
            .signal(signal);
    }

    pub async fn database(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.postgres_url).await.unwrap()
    }

    /// Creates an English auction (open now, ending after `ends_in`) through
    /// the cluster; returns its state and the engine spec it was built from.
    pub async fn create_english_auction(
        &self,
        seller: Uuid,
        ends_in: Duration,
    ) -> (pb::AuctionState, AuctionSpec) {
        let now = std::time::SystemTime::now();
        let request = pb::CreateAuctionRequest {
            request_id: format!("create-{}", Uuid::now_v7()),
            auction_id: Uuid::now_v7().to_string(),
            seller_id: seller.to_string(),
            seller_handle: "seller".to_owned(),
            title: "A lot under fire".to_owned(),
            parameters: Some(pb::AuctionParameters {
                format: pb::AuctionFormat::English as i32,
                format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                    pb::EnglishParameters {
                        starting_price: Some(usd("100")),
                        ..pb::EnglishParameters::default()
                    },
                )),
            }),
            start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(1))),
            end_time: Some(prost_types::Timestamp::from(now + ends_in)),
            ..pb::CreateAuctionRequest::default()
        };
        let token = self.token(Uuid::now_v7(), &[Role::Admin]);
        let state = self
            .until_answered(0, |mut client| {
                let request = with_token(request.clone(), &token);
                async move { client.create_auction(request).await }
            })
            .await
            .expect("create the auction")
            .into_inner()
            .state
            .expect("a state");
        let auction_id = Uuid::parse_str(&state.auction_id).unwrap();
        let (spec, _) = auction_bidding::convert::spec(&request, auction_id, seller).unwrap();
        (state, spec)
    }

    /// The auction's state as an admin sees it (bidder ids included).
    pub async fn state(&self, auction_id: &str) -> pb::AuctionState {
        let token = self.token(Uuid::now_v7(), &[Role::Admin]);
        self.until_answered(0, |mut client| {
            let request = with_token(
                pb::GetAuctionStateRequest {
                    auction_id: auction_id.to_owned(),
                },
                &token,
            );
            async move { client.get_auction_state(request).await }
        })
        .await
        .expect("get the state")
        .into_inner()
        .state
        .expect("a state")
    }
}
