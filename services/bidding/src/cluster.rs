//! Shard leadership through etcd, and the routing table every node keeps.
//!
//! Each bidding node holds one etcd lease (TTL `etcd.lease_ttl_ms`) and
//! registers itself under `<prefix>/nodes/<node>` with it. A shard's leader
//! is whoever created `<prefix>/leaders/<shard>` (a transaction that puts the
//! key only when it does not exist), attached to its lease: when the node
//! dies or freezes past its lease, etcd deletes its keys and the others
//! campaign. The key's create revision is the term's **epoch**: it rises
//! across terms, and the log refuses appends from a lower one (fencing), so
//! a deposed leader that does not know it yet cannot extend the log.
//!
//! Balance: with `k` registered nodes a node campaigns only while it leads
//! fewer than `ceil(shards / k)` shards and releases the excess when nodes
//! join; a shard left vacant for two lease periods is taken by anyone
//! (liveness over balance).
//!
//! Every node watches the prefix, so it knows each shard's leader and its
//! URL: the gRPC layer forwards a command for a shard led elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use auction_platform::config::{Config, ConfigError};
use auction_platform::{Shutdown, StartError};
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tonic::transport::{Channel, Endpoint};

use crate::shard::{ShardContext, Shards, Term};

/// How often vacant shards are looked at even without a watch event.
const BALANCE_EVERY: Duration = Duration::from_millis(500);
/// Pause before a new session after etcd failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// This node's name: `bidding.node_id`, or a random one.
pub fn node_id(config: &Config) -> String {
    config.bidding.node_id.clone().unwrap_or_else(|| {
        let random = uuid::Uuid::now_v7().simple().to_string();
        format!("node-{}-{}", std::process::id(), &random[24..])
    })
}

/// The leader of a shard, as etcd says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The node's name.
    pub node: String,
    /// Where to reach it.
    pub url: String,
    /// The term's epoch (the leader key's create revision).
    pub epoch: u64,
}

/// What etcd says: registered nodes and each shard's leader.
#[derive(Debug, Default)]
struct Table {
    nodes: BTreeMap<String, String>,
    leaders: Vec<Option<Leader>>,
}

/// Leadership and routing of this node in a cluster.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    url: String,
    shard_count: u32,
    prefix: String,
    table: RwLock<Table>,
    clients: Mutex<HashMap<String, BiddingServiceClient<Channel>>>,
}

impl Cluster {
    /// Joins the cluster: checks the advertised URL, then campaigns in the
    /// background until `context.shutdown`. Returns at once; shards are
    /// served as terms are won.
    pub async fn start(
        config: &Config,
        local_address: Option<std::net::SocketAddr>,
        context: ShardContext,
        shards: Shards,
    ) -> Result<Arc<Self>, StartError> {
        let url = advertise_url(config, local_address)?;
        let cluster = Arc::new(Self {
            node: context.node.clone(),
            url,
            shard_count: shards.count(),
            prefix: config.etcd.key_prefix.clone(),
            table: RwLock::new(Table {
                nodes: BTreeMap::new(),
                leaders: vec![None; shards.count() as usize],
            }),
            clients: Mutex::new(HashMap::new()),
        });
        let campaign = Campaign {
            cluster: Arc::clone(&cluster),
            endpoints: config.etcd.endpoints.clone(),
            ttl_seconds: i64::try_from(config.etcd.lease_ttl_ms.div_ceil(1_000))
                .unwrap_or(3)
                .max(1),
            context,
            shards,
            terms: HashMap::new(),
            vacant_since: HashMap::new(),
        };
        tracing::info!(node = %cluster.node, url = %cluster.url, "joining the bidding cluster");
        tokio::spawn(campaign.run());
        Ok(cluster)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The leader of `shard` as last seen in etcd.
    pub fn leader(&self, shard: u32) -> Option<Leader> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .leaders
            .get(shard as usize)
            .cloned()
            .flatten()
    }

    /// A client for the node at `url` (connected lazily, kept).
    pub fn client(&self, url: &str) -> Option<BiddingServiceClient<Channel>> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(url) {
            return Some(client.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let client = BiddingServiceClient::new(endpoint.connect_lazy());
        clients.insert(url.to_owned(), client.clone());
        Some(client)
    }

    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    fn leaders_prefix(&self) -> String {
        format!("{}/leaders/", self.prefix)
    }

    fn leader_key(&self, shard: u32) -> String {
        format!("{}/leaders/{shard:05}", self.prefix)
    }

    /// Applies a key's new value (or its deletion) to the table.
    fn apply(&self, key: &str, value: Option<(&str, i64)>) {
        let mut table = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(node) = key.strip_prefix(&self.nodes_prefix()) {
            match value {
                Some((url, _)) => {
                    table.nodes.insert(node.to_owned(), url.to_owned());
                }
                None => {
                    table.nodes.remove(node);
                }
            }
        } else if let Some(shard) = key.strip_prefix(&self.leaders_prefix())
            && let Ok(shard) = shard.parse::<usize>()
            && let Some(slot) = table.leaders.get_mut(shard)
        {
            *slot = value.and_then(|(value, revision)| {
                let (node, url) = value.split_once('\n')?;
                Some(Leader {
                    node: node.to_owned(),
                    url: url.to_owned(),
                    epoch: u64::try_from(revision).ok()?,
                })
            });
        }
    }
}

/// The URL peers reach this node at: `bidding.advertise_url`, or the bound
/// listen address when it names a concrete IP.
fn advertise_url(
    config: &Config,
    local_address: Option<std::net::SocketAddr>,
) -> Result<String, StartError> {
    if let Some(url) = &config.bidding.advertise_url {
        return Ok(url.clone());
    }
    match local_address {
        Some(address) if !address.ip().is_unspecified() && address.port() != 0 => {
            Ok(format!("http://{address}"))
        }
        _ => Err(StartError::Config(ConfigError::Invalid {
            key: "bidding.advertise_url",
            message: format!(
                "is required with etcd when server.listen_address (`{}`) does not name the address peers can reach",
                config.server.listen_address
            ),
        })),
    }
}

/// The background work of leadership: one etcd session after another.
struct Campaign {
    cluster: Arc<Cluster>,
    endpoints: Vec<String>,
    ttl_seconds: i64,
    context: ShardContext,
    shards: Shards,
    terms: HashMap<u32, Term>,
    vacant_since: HashMap<u32, Instant>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("etcd")]
    Etcd(#[from] etcd_client::Error),
    #[error("the lease was lost: {0}")]
    LeaseLost(&'static str),
    #[error("the watch ended")]
    WatchEnded,
}

impl Campaign {
    async fn run(mut self) {
        let shutdown = self.context.shutdown.clone();
        loop {
            let result = self.session(&shutdown).await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    // Whatever happened, this node may no longer lead: stop
                    // serving every shard at once.
                    tracing::warn!(
                        node = %self.cluster.node,
                        terms = self.terms.len(),
                        error = %auction_platform::error::DisplayChain(&error),
                        "leadership session ended; stepping down from every shard"
                    );
                    for (_, term) in self.terms.drain() {
                        term.abandon(&self.shards);
                    }
                }
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    async fn session(&mut self, shutdown: &Shutdown) -> Result<(), SessionError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        let mut client = Client::connect(&self.endpoints, Some(options)).await?;
        let asked_at = Instant::now();
        let granted = client.lease_grant(self.ttl_seconds, None).await?;
        let lease = granted.id();
        let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(1).max(1));
        // The lease is counted from before the grant was asked for.
        let started = Instant::now();
        let deadline = Arc::new(AtomicU64::new(millis_since(started, asked_at + ttl)));
        let (keeper, acks) = client.lease_keep_alive(lease).await?;
        let (lost_sender, mut lost) = tokio::sync::oneshot::channel();
        let keepalive = tokio::spawn(keep_alive(
            keeper,
            acks,
            ttl,
            started,
            Arc::clone(&deadline),
            lost_sender,
        ));
        let _stop_keepalive = AbortOnDrop(keepalive);
        let lease_valid =
            || Instant::now() < started + Duration::from_millis(deadline.load(Ordering::Acquire));

        client
            .put(
                format!("{}{}", self.cluster.nodes_prefix(), self.cluster.node),
                self.cluster.url.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        let snapshot = client
            .get(
                format!("{}/", self.cluster.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let revision = snapshot.header().map_or(0, |header| header.revision());
        {
            let mut table = self
                .cluster
                .table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            table.nodes.clear();
            table.leaders = vec![None; self.cluster.shard_count as usize];
        }
        for kv in snapshot.kvs() {
            if let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) {
                self.cluster.apply(key, Some((value, kv.create_revision())));
            }
        }
        let mut watch = client
            .watch(
                format!("{}/", self.cluster.prefix),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        let mut balance = tokio::time::interval(BALANCE_EVERY);
        balance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !lease_valid() {
                return Err(SessionError::LeaseLost(
                    "past its deadline (frozen or etcd slow)",
                ));
            }
            tokio::select! {
                () = shutdown.wait() => {
                    self.leave(&mut client, lease).await;
                    return Ok(());
                }
                reason = &mut lost => {
                    return Err(SessionError::LeaseLost(reason.unwrap_or("keep-alive task ended")));
                }
                message = watch.message() => {
                    let Some(response) = message? else { return Err(SessionError::WatchEnded) };
                    if response.canceled() {
                        return Err(SessionError::WatchEnded);
                    }
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        match event.event_type() {
                            EventType::Put => {
                                if let Ok(value) = kv.value_str() {
                                    self.cluster.apply(key, Some((value, kv.create_revision())));
                                }
                            }
                            EventType::Delete => self.cluster.apply(key, None),
                        }
                    }
                    if lease_valid() {
                        self.balance(&mut client, lease).await?;
                    }
                }
                _ = balance.tick() => {
                    if lease_valid() {
                        self.balance(&mut client, lease).await?;
                    }
                }
            }
        }
    }

    /// Drops terms whose writer stopped (fenced out), releases the excess
    /// over this node's fair share, and campaigns for vacant shards.
    async fn balance(&mut self, client: &mut Client, lease: i64) -> Result<(), SessionError> {
        let (node_count, vacant) = {
            let table = self
                .cluster
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let vacant: Vec<u32> = table
                .leaders
                .iter()
                .enumerate()
                .filter(|(_, leader)| leader.is_none())
                .filter_map(|(shard, _)| u32::try_from(shard).ok())
                .collect();
            (table.nodes.len().max(1), vacant)
        };
        // A writer that stopped by itself was fenced: give the key back.
        let stopped: Vec<u32> = self
            .terms
            .iter()
            .filter(|(_, term)| !term.is_running())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in stopped {
            if let Some(term) = self.terms.remove(&shard) {
                let epoch = term.epoch();
                term.end(&self.shards).await;
                self.release_key(client, shard, epoch).await?;
            }
        }
        let shard_count = self.cluster.shard_count as usize;
        let fair_share = shard_count.div_ceil(node_count);
        // Release the excess, highest shards first, one round at a time.
        if self.terms.len() > fair_share {
            let mut mine: Vec<u32> = self.terms.keys().copied().collect();
            mine.sort_unstable();
            let excess = self.terms.len() - fair_share;
            for shard in mine.into_iter().rev().take(excess) {
                if let Some(term) = self.terms.remove(&shard) {
                    let epoch = term.epoch();
                    tracing::info!(shard, epoch, fair_share, "releasing a shard to rebalance");
                    term.end(&self.shards).await;
                    self.release_key(client, shard, epoch).await?;
                }
            }
        }
        let now = Instant::now();
        self.vacant_since.retain(|shard, _| vacant.contains(shard));
        for shard in &vacant {
            self.vacant_since.entry(*shard).or_insert(now);
        }
        // Start at a node-specific offset so nodes do not all race for the
        // same shard first.
        let offset = self.cluster.node.bytes().fold(0usize, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(usize::from(byte))
        });
        let starving = Duration::from_secs(u64::try_from(self.ttl_seconds).unwrap_or(3) * 2);
        let mut ordered = vacant;
        if !ordered.is_empty() {
            let rotate = offset % ordered.len();
            ordered.rotate_left(rotate);
        }
        for shard in ordered {
            let long_vacant = self
                .vacant_since
                .get(&shard)
                .is_some_and(|since| now.duration_since(*since) > starving);
            if self.terms.len() >= fair_share && !long_vacant {
                continue;
            }
            if self.terms.contains_key(&shard) {
                continue;
            }
            self.acquire(client, lease, shard).await?;
        }
        Ok(())
    }

    /// Campaigns for `shard`: creates its leader key if nobody holds it,
    /// then begins the term under the key's create revision.
    async fn acquire(
        &mut self,
        client: &mut Client,
        lease: i64,
        shard: u32,
    ) -> Result<(), SessionError> {
        let key = self.cluster.leader_key(shard);
        let value = format!("{}\n{}", self.cluster.node, self.cluster.url);
        let response = client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            )
            .await?;
        if !response.succeeded() {
            return Ok(());
        }
        let revision = response.header().map_or(0, |header| header.revision());
        let Ok(epoch) = u64::try_from(revision) else {
            return Ok(());
        };
        self.cluster
            .apply(&self.cluster.leader_key(shard), Some((&value, revision)));
        match Term::begin(&self.context, &self.shards, shard, epoch).await {
            Ok(term) => {
                tracing::info!(shard, epoch, node = %self.cluster.node, "leading shard");
                self.terms.insert(shard, term);
            }
            Err(error) => {
                tracing::error!(
                    shard,
                    epoch,
                    error = %auction_platform::error::DisplayChain(&error),
                    "could not begin a term; giving the shard back"
                );
                self.release_key(client, shard, epoch).await?;
            }
        }
        Ok(())
    }

    /// Deletes the shard's leader key if it is still this term's.
    async fn release_key(
        &self,
        client: &mut Client,
        shard: u32,
        epoch: u64,
    ) -> Result<(), SessionError> {
        let key = self.cluster.leader_key(shard);
        let revision = i64::try_from(epoch).unwrap_or(i64::MAX);
        client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await?;
        Ok(())
    }

    /// Process shutdown: the writers drain what is queued (they stop on the
    /// same signal), then the lease is revoked so others take over at once.
    async fn leave(&mut self, client: &mut Client, lease: i64) {
        for (_, term) in self.terms.drain() {
            term.finish(&self.shards).await;
        }
        if let Err(error) = client.lease_revoke(lease).await {
            tracing::warn!(error = %error, "could not revoke the lease; it expires by itself");
        }
    }
}

fn millis_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
}

/// Renews the lease every third of its TTL; moves `deadline` (milliseconds
/// after `origin`) forward on each renewal, counted from when the renewal
/// was sent. Reports a lost lease on `lost`.
async fn keep_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut acks: etcd_client::LeaseKeepAliveStream,
    ttl: Duration,
    origin: Instant,
    deadline: Arc<AtomicU64>,
    lost: tokio::sync::oneshot::Sender<&'static str>,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent_at = Instant::now();
    let reason = loop {
        tokio::select! {
            _ = tick.tick() => {
                sent_at = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break "a keep-alive could not be sent";
                }
            }
            ack = acks.message() => match ack {
                Ok(Some(response)) if response.ttl() > 0 => {
                    let renewed = sent_at + Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0));
                    deadline.fetch_max(millis_since(origin, renewed), Ordering::AcqRel);
                }
                Ok(Some(_)) => break "etcd says the lease expired",
                Ok(None) => break "the keep-alive stream ended",
                Err(_) => break "a keep-alive failed",
            }
        }
    };
    // Nothing may be served past this point on this lease.
    deadline.store(0, Ordering::Release);
    let _ = lost.send(reason);
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
