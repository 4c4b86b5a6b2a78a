//! Shards: one task per shard applies its auctions' commands one at a time in
//! arrival order (a single writer: no locks on the hot path, fairness by
//! arrival), fires their timers, appends each batch's results to the log in
//! one transaction (group commit) and answers only after the commit.
//!
//! A batch is everything that was queued when the shard woke up (at most
//! [`MAX_BATCH`]): due timers first, then the requests in order. If the
//! append fails, nothing of the batch is acknowledged and the auctions it
//! touched are dropped from memory, to be reloaded from the log (which holds
//! exactly what was committed) on their next use. If the append is fenced (a
//! newer epoch appended), the shard stops: it is no longer the leader.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use auction_engine::{
    Action, Actor, Auction, AuctionSpec, AuctionStatus, AuctionView, BidStatus, Command, Event,
    Money, Timestamp, UserId,
};
use auction_platform::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use uuid::Uuid;

use crate::error::{BiddingError, Refusal};
use crate::hub::{Hub, Published};
use crate::log::{
    Batch, EventRow, ListOrder, ListOrderChange, Log, LogError, NewAuction, OutcomeRow, Snapshot,
    StatusChange,
};
use crate::market::{self, MarketFeed};

/// At most this many requests are applied and committed together.
pub const MAX_BATCH: usize = 512;
/// Queued requests per shard; beyond it callers get RESOURCE_EXHAUSTED.
pub const QUEUE_CAPACITY: usize = 8_192;

/// After a failed append, how long a writer waits before it tries again to
/// load the auctions it dropped (when nothing else wakes it sooner).
const RELOAD_RETRY_MS: i64 = 200;
/// A finished auction stays in memory this long (late readers, watchers of
/// the close), then is dropped; a later read reloads it from the log.
pub const EVICT_FINISHED_AFTER_MS: i64 = 60_000;
/// A snapshot is written after this many events of an auction.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 1_000;
/// Recent request outcomes kept in memory per shard; older ones are found in
/// the log.
pub const OUTCOME_CACHE: usize = 65_536;
/// A bound on timer firings per auction per batch (a Dutch clock that missed
/// many ticks while the process was down fires them all, but not forever).
const MAX_TICKS_PER_AUCTION: usize = 100_000;

/// What the catalog knows of an auction that the engine does not need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The catalog item.
    pub item_id: String,
    /// Listing title.
    pub title: String,
    /// Category id.
    pub category_id: String,
    /// The category and its ancestors, for market-feed filters.
    pub category_path_ids: Vec<String>,
    /// The seller's public handle.
    pub seller_handle: String,
    /// The seller's user id (for other services, on the event bus).
    #[serde(default)]
    pub seller_id: String,
    /// The original end time (English, sealed), before any extension.
    pub original_end_ms: Option<i64>,
    /// Live lots: the session, the lot number and the auctioneer. Absent
    /// (and not serialised) for other formats, so their stored metadata and
    /// request fingerprints are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_lot: Option<crate::live::LiveLotMetadata>,
}

/// What a caller may learn of their own position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerFacts {
    /// The viewer.
    pub user_id: u128,
    /// Their bid status, if they bid.
    pub bid_status: Option<BidStatus>,
    /// Their own highest (or sealed) amount.
    pub own_bid: Option<Money>,
}

/// The answer to a request: the auction after it, and the events it caused.
/// Stored as the outcome of keyed requests, so a retry gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The auction.
    pub auction_id: Uuid,
    /// Its public view after the request.
    pub view: AuctionView,
    /// The catalog's metadata.
    pub metadata: Metadata,
    /// The events this request caused (empty for reads), in sequence.
    pub events: Vec<Event>,
    /// The caller's own position.
    pub viewer: Option<ViewerFacts>,
    /// The server time the request was applied at (the answer's
    /// `server_time`, so a replayed answer is the original one).
    pub at_ms: i64,
}

/// A stored outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Accepted(Box<Receipt>),
    Refused(Refusal),
}

impl Outcome {
    fn into_result(self) -> Result<Receipt, BiddingError> {
        match self {
            Outcome::Accepted(receipt) => Ok(*receipt),
            Outcome::Refused(refusal) => Err(BiddingError::Refused(refusal)),
        }
    }
}

/// The idempotency key of a mutating request, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who asks.
    pub caller: Uuid,
    /// The RPC method.
    pub method: &'static str,
    /// The caller's key.
    pub request_id: String,
    /// The request's content without its id.
    pub fingerprint: String,
}

type Reply = oneshot::Sender<Result<Receipt, BiddingError>>;

/// A request to a shard.
#[derive(Debug)]
pub enum Request {
    /// Creates an auction.
    Create {
        /// The engine spec.
        spec: Box<AuctionSpec>,
        /// Catalog metadata.
        metadata: Metadata,
        /// The request's idempotency key.
        key: IdempotencyKey,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Applies an engine command (its `received_at` is set by the shard).
    Apply {
        /// The auction.
        auction_id: Uuid,
        /// Who acts, and what.
        actor: Actor,
        /// The engine action.
        action: Action,
        /// Live-lot controls: act only if the auction's wire sequence still
        /// equals this (ABORTED `VERSION_CONFLICT` otherwise).
        expected_sequence: Option<u64>,
        /// The request's idempotency key.
        key: IdempotencyKey,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Replaces a scheduled auction's parameters or schedule (UpdateAuction).
    Update {
        /// The auction.
        auction_id: Uuid,
        /// Who asks (an admin, or the service for the catalog).
        actor: Actor,
        /// What changes.
        patch: Box<crate::update::Patch>,
        /// The request's idempotency key.
        key: IdempotencyKey,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Reads an auction's state, as a viewer.
    Read {
        /// The auction.
        auction_id: Uuid,
        /// Who reads, for their own position.
        viewer: Option<UserId>,
        /// Where the answer goes.
        reply: Reply,
    },
}

impl Request {
    /// The idempotency key of a mutating request.
    fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Create { key, .. } | Self::Apply { key, .. } | Self::Update { key, .. } => {
                Some(key)
            }
            Self::Read { .. } => None,
        }
    }

    fn into_reply(self) -> Reply {
        match self {
            Self::Create { reply, .. }
            | Self::Apply { reply, .. }
            | Self::Update { reply, .. }
            | Self::Read { reply, .. } => reply,
        }
    }
}

/// Where time comes from: the system clock in production, a manual one in
/// tests.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(auction_platform::now_ms())
    }
}

/// The shards this node leads: a sender per shard while it leads it.
///
/// A slot is filled when a term begins on this node and emptied when it
/// ends; a command for an empty slot is answered NOT_LEADER (the gRPC layer
/// forwards it to the leader first when one is known).
#[derive(Debug, Clone)]
pub struct Shards {
    slots: Arc<Vec<RwLock<Option<mpsc::Sender<Request>>>>>,
}

impl Shards {
    /// `count` shards, none led yet.
    pub fn new(count: u32) -> Self {
        Self {
            slots: Arc::new((0..count.max(1)).map(|_| RwLock::new(None)).collect()),
        }
    }

    /// The shard an auction belongs to: a fixed hash of its id.
    pub fn shard_of(auction_id: Uuid, shard_count: u32) -> u32 {
        // UUIDv7's low bits are random: a fair spread.
        let low = auction_id.as_u128() as u64;
        u32::try_from(low % u64::from(shard_count.max(1))).unwrap_or(0)
    }

    /// Queues a request on the auction's shard; a full queue answers
    /// RESOURCE_EXHAUSTED with a retry hint instead of growing memory.
    pub fn send(&self, auction_id: Uuid, request: Request) -> Result<(), BiddingError> {
        let shard = Self::shard_of(auction_id, self.count());
        let Some(slot) = self.slots.get(shard as usize) else {
            return Err(BiddingError::Internal(format!("no shard {shard}")));
        };
        let slot = slot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(sender) = slot.as_ref() else {
            return Err(BiddingError::NotLeader { shard });
        };
        match sender.try_send(request) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(BiddingError::ShardBusy {
                shard,
                retry_after_ms: 50,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BiddingError::NotLeader { shard }),
        }
    }

    /// Whether this node is serving `shard` now (its writer is running).
    pub fn leads(&self, shard: u32) -> bool {
        self.slots.get(shard as usize).is_some_and(|slot| {
            slot.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(|sender| !sender.is_closed())
        })
    }

    /// How many shards.
    pub fn count(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    fn install(&self, shard: u32, sender: mpsc::Sender<Request>) {
        if let Some(slot) = self.slots.get(shard as usize) {
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
        }
    }

    fn vacate(&self, shard: u32) {
        if let Some(slot) = self.slots.get(shard as usize) {
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }
}

/// What every shard writer of this node shares.
#[derive(Clone)]
pub struct ShardContext {
    /// The log.
    pub log: Log,
    /// Live fan-out to watchers on this node.
    pub hub: Arc<Hub>,
    /// The partners' market feed of this node.
    pub market: Arc<MarketFeed>,
    /// Woken after each commit that staged bus events.
    pub relay: Arc<auction_platform::bus::outbox::Relay>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Process shutdown: writers drain their queues and stop.
    pub shutdown: Shutdown,
    /// This node's name, recorded with each term it begins.
    pub node: String,
    /// Cross-node live fan-out (a cluster with Redis).
    pub fanout: Option<Arc<crate::fanout::Fanout>>,
    /// The request keys this node's shards are deciding.
    pub claims: Arc<Claims>,
}

/// The request keys being decided on this node, each by one shard, from
/// before its outcome is looked up until its batch lands (or fails). A key
/// is scoped to its caller, not to an auction, so one client may send the
/// same request id to two auctions, which live on two shards: without the
/// claim both would find no outcome, both would decide, and the second
/// commit would break the unique key and fail the whole batch it is in,
/// other bidders' bids with it. With it the second shard answers
/// ALREADY_EXISTS at once (the content differs: another auction), even if
/// the claiming batch then fails (the id was reused all the same). Nodes do
/// not share claims: across nodes the log's unique key still decides.
#[derive(Debug, Default)]
pub struct Claims(std::sync::Mutex<HashMap<OutcomeKey, (u32, usize)>>);

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OutcomeKey, (u32, usize)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `key` for `shard`; false when another shard holds it.
    fn claim(&self, key: &OutcomeKey, shard: u32) -> bool {
        let mut claims = self.lock();
        match claims.get_mut(key) {
            Some((holder, count)) if *holder == shard => {
                *count += 1;
                true
            }
            Some(_) => false,
            None => {
                claims.insert(key.clone(), (shard, 1));
                true
            }
        }
    }

    fn release(&self, keys: &[OutcomeKey]) {
        let mut claims = self.lock();
        for key in keys {
            if let Some((_, count)) = claims.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    claims.remove(key);
                }
            }
        }
    }
}

/// The keys a batch claimed, released when the batch is dropped: after it
/// was answered, failed, or abandoned at the end of a term.
struct Claimed {
    claims: Arc<Claims>,
    keys: Vec<OutcomeKey>,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.claims.release(&self.keys);
    }
}

/// A term of a shard led by this node: its writer runs until [`Term::end`].
#[derive(Debug)]
pub struct Term {
    shard: u32,
    epoch: u64,
    stop: Shutdown,
    writer: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Begins a term of `shard` under `epoch`: raises the log's fence to the
    /// epoch first (so a deposed leader can no longer append), then loads
    /// the shard's live auctions from the log, re-arms their timers, and
    /// starts serving.
    pub async fn begin(
        context: &ShardContext,
        shards: &Shards,
        shard: u32,
        epoch: u64,
    ) -> Result<Self, BiddingError> {
        context
            .log
            .begin_term(shard, epoch, &context.node, context.clock.now().unix_ms())
            .await
            .map_err(BiddingError::Unavailable)?;
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let mut worker = Worker {
            shard,
            epoch,
            log: context.log.clone(),
            hub: Arc::clone(&context.hub),
            market: Arc::clone(&context.market),
            relay: Arc::clone(&context.relay),
            clock: Arc::clone(&context.clock),
            fanout: context.fanout.clone(),
            claims: Arc::clone(&context.claims),
            auctions: HashMap::new(),
            timers: BTreeSet::new(),
            outcomes: HashMap::new(),
            outcome_order: VecDeque::new(),
            evictions: VecDeque::new(),
            in_flight: None,
            reload: Vec::new(),
        };
        worker.recover().await?;
        let stop = Shutdown::new();
        let writer = tokio::spawn(worker.run(receiver, context.shutdown.clone(), stop.clone()));
        shards.install(shard, sender);
        Ok(Self {
            shard,
            epoch,
            stop,
            writer,
        })
    }

    /// The shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The term's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the writer is still running (it stops by itself when the
    /// log fences it out).
    pub fn is_running(&self) -> bool {
        !self.writer.is_finished()
    }

    /// Stops serving the shard at once: new commands are refused, queued
    /// ones are answered NOT_LEADER unapplied, a batch being committed
    /// finishes (the log decides whether it lands), then the writer exits.
    pub async fn end(self, shards: &Shards) {
        shards.vacate(self.shard);
        self.stop.trigger();
        let _ = self.writer.await;
    }

    /// Process shutdown: the writer drains what is queued (it stops on the
    /// process's shutdown signal); this waits for it.
    pub async fn finish(self, shards: &Shards) {
        let _ = self.writer.await;
        shards.vacate(self.shard);
    }

    /// Like [`Term::end`] without waiting for the writer to exit.
    pub fn abandon(self, shards: &Shards) {
        shards.vacate(self.shard);
        self.stop.trigger();
    }
}

/// Single-node leadership (no etcd): this node leads every shard, each
/// under the epoch after the highest the log has seen, which fences out
/// any earlier process that might still be writing. Returns once every
/// shard has recovered.
pub async fn start_single_node(
    context: &ShardContext,
    shard_count: u32,
) -> Result<(Shards, Vec<Term>), BiddingError> {
    let shards = Shards::new(shard_count);
    let mut terms = Vec::with_capacity(shard_count as usize);
    for shard in 0..shard_count {
        let epoch = context
            .log
            .current_epoch(shard)
            .await
            .map_err(BiddingError::Unavailable)?
            + 1;
        terms.push(Term::begin(context, &shards, shard, epoch).await?);
    }
    Ok((shards, terms))
}

/// An auction in memory.
#[derive(Debug)]
struct Live {
    auction: Auction,
    metadata: Arc<Metadata>,
    /// The deadline currently armed in `timers`.
    armed: Option<Timestamp>,
    /// The sequence of the last snapshot written.
    snapshot_seq: u64,
    /// The English leader as of the last staged batch: who a retraction's
    /// new leader replaced (for the per-user index).
    leader: Option<UserId>,
    /// The ListAuctions place last staged for the log; `None` when the
    /// auction was just created or loaded (what is stored may predate the
    /// place), so the next batch writes it.
    list_order: Option<ListOrder>,
}

type OutcomeKey = (Uuid, &'static str, String);

struct Worker {
    shard: u32,
    epoch: u64,
    log: Log,
    hub: Arc<Hub>,
    market: Arc<MarketFeed>,
    /// Woken after each commit that staged bus events.
    relay: Arc<auction_platform::bus::outbox::Relay>,
    clock: Arc<dyn Clock>,
    fanout: Option<Arc<crate::fanout::Fanout>>,
    claims: Arc<Claims>,
    auctions: HashMap<Uuid, Live>,
    /// (deadline, auction): the earliest is the next timer to fire.
    timers: BTreeSet<(Timestamp, Uuid)>,
    /// Recent outcomes: key -> (fingerprint, outcome JSON-free form).
    outcomes: HashMap<OutcomeKey, (String, Outcome)>,
    outcome_order: VecDeque<OutcomeKey>,
    /// Finished auctions to drop from memory at (unix ms, auction), in
    /// order; one that is read later is reloaded from the log.
    evictions: VecDeque<(i64, Uuid)>,
    /// The batch being committed, with what waits for its commit: the
    /// writer prepares the next batch meanwhile (on top of this one's
    /// changes in memory, growing it with every command that arrives) and
    /// settles this one before answering anything of the next.
    in_flight: Option<(crate::log::Committed, Pending)>,
    /// Auctions dropped from memory by a failed batch, to load again from
    /// the log (which re-arms their timers) as soon as it answers: an
    /// auction nobody reads must still close on time.
    reload: Vec<Uuid>,
}

/// What a batch has produced so far.
#[derive(Default)]
struct Pending {
    batch: Batch,
    replies: Vec<(Reply, Result<Receipt, BiddingError>)>,
    /// Auctions changed by the batch, with the events to publish.
    published: Vec<(Uuid, Vec<Event>)>,
    touched: HashSet<Uuid>,
    new_outcomes: Vec<OutcomeKey>,
    /// Auctions created by the batch, for the market feed.
    created: Vec<Uuid>,
    /// The request keys the batch is deciding (see [`Claims`]).
    claimed: Vec<Claimed>,
}

impl Worker {
    async fn recover(&mut self) -> Result<(), BiddingError> {
        let ids = self
            .log
            .live_auction_ids(self.shard)
            .await
            .map_err(BiddingError::Unavailable)?;
        for auction_id in ids {
            self.load(auction_id).await?;
        }
        tracing::debug!(
            shard = self.shard,
            epoch = self.epoch,
            auctions = self.auctions.len(),
            "shard recovered"
        );
        Ok(())
    }

    /// Loads an auction from the log into memory (snapshot, then the events
    /// after it) and arms its timer; `false` when it does not exist.
    async fn load(&mut self, auction_id: Uuid) -> Result<bool, BiddingError> {
        if self.auctions.contains_key(&auction_id) {
            return Ok(true);
        }
        let Some((auction, metadata, snapshot_seq)) = rebuild(&self.log, auction_id).await? else {
            return Ok(false);
        };
        let leader = auction.leader();
        let mut live = Live {
            auction,
            metadata: Arc::new(metadata),
            armed: None,
            snapshot_seq,
            leader,
            list_order: None,
        };
        rearm(&mut self.timers, auction_id, &mut live);
        if live.auction.status().is_finished() {
            self.schedule_eviction(auction_id);
        }
        self.auctions.insert(auction_id, live);
        Ok(true)
    }

    /// Drops `auction_id` from memory after [`EVICT_FINISHED_AFTER_MS`].
    fn schedule_eviction(&mut self, auction_id: Uuid) {
        let due = self
            .clock
            .now()
            .unix_ms()
            .saturating_add(EVICT_FINISHED_AFTER_MS);
        self.evictions.push_back((due, auction_id));
    }

    /// Drops finished auctions whose time in memory is up: their state is
    /// final and in the log, so memory holds only what is live.
    fn evict(&mut self, now: Timestamp) {
        while let Some(&(due, auction_id)) = self.evictions.front() {
            if due > now.unix_ms() {
                break;
            }
            self.evictions.pop_front();
            if self
                .auctions
                .get(&auction_id)
                .is_some_and(|live| live.auction.status().is_finished())
                && let Some(live) = self.auctions.remove(&auction_id)
                && let Some(deadline) = live.armed
            {
                self.timers.remove(&(deadline, auction_id));
            }
        }
    }

    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<Request>,
        shutdown: Shutdown,
        stop: Shutdown,
    ) {
        let mut requests = Vec::with_capacity(MAX_BATCH);
        // The next batch, prepared while one is in flight.
        let mut next: Option<Pending> = None;
        // The queue's senders are gone (the node is stopping).
        let mut queue_closed = false;
        loop {
            if let Some((answer, _)) = self.in_flight.as_mut() {
                // A batch is being committed. Commands arriving meanwhile
                // are applied at once into the next batch (CPU work while
                // the database works), which grows until the first lands
                // and is then committed whole: big batches, few commits.
                let stopping = shutdown.is_triggered() || stop.is_triggered();
                let room = next.as_ref().map_or(MAX_BATCH, |pending: &Pending| {
                    MAX_BATCH.saturating_sub(pending.replies.len())
                });
                // A deadline passing meanwhile is applied into the next
                // batch at once, not when the next command happens to come.
                let timer_ms = self.timers.first().map(|(deadline, _)| {
                    deadline
                        .unix_ms()
                        .saturating_sub(self.clock.now().unix_ms())
                });
                tokio::select! {
                    biased;
                    landed = answer => {
                        let settled = self.settled(landed);
                        let prepared = next.take();
                        let going = match (settled, prepared) {
                            (Err(fenced), Some(prepared)) => {
                                // Prepared on top of the batch that failed.
                                self.fail(prepared, fenced);
                                !fenced
                            }
                            (Err(fenced), None) => !fenced,
                            (Ok(()), Some(prepared)) => self.commit(prepared).await,
                            (Ok(()), None) => true,
                        };
                        if !going {
                            tracing::warn!(shard = self.shard, epoch = self.epoch, "shard deposed; it stops serving");
                            return;
                        }
                    }
                    received = receiver.recv(), if !stopping && !queue_closed && room > 0 => {
                        match received {
                            Some(request) => {
                                requests.push(request);
                                while requests.len() < room {
                                    match receiver.try_recv() {
                                        Ok(request) => requests.push(request),
                                        Err(_) => break,
                                    }
                                }
                                let prepared = next.get_or_insert_with(Pending::default);
                                self.prepare(std::mem::take(&mut requests), prepared).await;
                            }
                            None => queue_closed = true,
                        }
                    }
                    () = sleep_for(timer_ms), if !stopping && timer_ms.is_some() => {
                        let prepared = next.get_or_insert_with(Pending::default);
                        self.prepare(Vec::new(), prepared).await;
                    }
                }
                continue;
            }
            if let Some(prepared) = next.take() {
                // (Not expected: a prepared batch is committed as soon as
                // the one before it lands. Never drop one all the same.)
                if !self.commit(prepared).await {
                    return;
                }
                continue;
            }
            let next_timer = self.timers.first().map(|(deadline, _)| deadline.unix_ms());
            let next_eviction = self.evictions.front().map(|(due, _)| *due);
            let next_reload = (!self.reload.is_empty())
                .then(|| self.clock.now().unix_ms().saturating_add(RELOAD_RETRY_MS));
            let next_wake = [next_timer, next_eviction, next_reload]
                .into_iter()
                .flatten()
                .min();
            let sleep_ms =
                next_wake.map(|deadline| deadline.saturating_sub(self.clock.now().unix_ms()));
            tokio::select! {
                biased;
                () = shutdown.wait() => {
                    // Answer what is already queued, then stop.
                    receiver.close();
                    while let Some(request) = receiver.recv().await {
                        requests.push(request);
                        if requests.len() == MAX_BATCH
                            && !self.process(std::mem::take(&mut requests)).await
                        {
                            return;
                        }
                    }
                    if !requests.is_empty() {
                        self.process(std::mem::take(&mut requests)).await;
                    }
                    let _ = self.settle().await;
                    return;
                }
                () = stop.wait() => {
                    // The term ended (released or lost): nothing queued is
                    // applied; callers retry on the new leader.
                    receiver.close();
                    while let Some(request) = receiver.recv().await {
                        let _ = request.into_reply().send(Err(BiddingError::NotLeader { shard: self.shard }));
                    }
                    tracing::info!(shard = self.shard, epoch = self.epoch, "term ended");
                    return;
                }
                received = receiver.recv() => {
                    let Some(request) = received else {
                        let _ = self.settle().await;
                        return;
                    };
                    requests.push(request);
                    while requests.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(request) => requests.push(request),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_for(sleep_ms) => {}
            }
            if !self.process(std::mem::take(&mut requests)).await {
                tracing::warn!(
                    shard = self.shard,
                    epoch = self.epoch,
                    "shard deposed; it stops serving"
                );
                return;
            }
        }
    }

    /// Applies due timers and `requests`, commits, answers. Returns `false`
    /// when the shard has been fenced and must stop.
    async fn process(&mut self, requests: Vec<Request>) -> bool {
        let mut pending = Pending::default();
        self.prepare(requests, &mut pending).await;
        self.commit(pending).await
    }

    /// Applies due timers and `requests` in memory, adding what they produce
    /// to `pending` (committed and answered later).
    async fn prepare(&mut self, requests: Vec<Request>, pending: &mut Pending) {
        let now = self.clock.now();
        self.evict(now);
        for auction_id in std::mem::take(&mut self.reload) {
            if let Err(error) = self.load(auction_id).await {
                tracing::warn!(%auction_id, %error, "reloading after a failed append; retrying");
                self.reload.push(auction_id);
            }
        }
        self.fire_timers(now, pending);
        let requests = self.claim(requests, pending);
        if let Err(error) = self.prefetch_outcomes(&requests).await {
            // Without the outcomes we cannot tell a retry from a new request.
            for request in requests {
                let _ =
                    request
                        .into_reply()
                        .send(Err(BiddingError::Unavailable(LogError::Corrupt(
                            error.to_string(),
                        ))));
            }
            return;
        }
        for request in requests {
            self.handle(request, now, pending).await;
        }
    }

    /// Hands the batch to the log after the one in flight has landed; its
    /// answers wait in `in_flight`. Returns `false` when fenced.
    async fn commit(&mut self, pending: Pending) -> bool {
        if let Err(fenced) = self.settle().await {
            // This batch was prepared on top of the one that failed.
            self.fail(pending, fenced);
            return !fenced;
        }
        if pending.batch.is_empty() {
            self.conclude(pending);
        } else {
            let mut pending = pending;
            let batch = std::mem::take(&mut pending.batch);
            self.in_flight = Some((self.log.submit(self.shard, self.epoch, batch), pending));
        }
        true
    }

    /// Waits for the batch in flight (if any) and answers it; `Err(fenced)`
    /// when it failed.
    async fn settle(&mut self) -> Result<(), bool> {
        let Some((answer, _)) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let landed = answer.await;
        self.settled(landed)
    }

    /// The log answered the batch in flight: answers its commands (or fails
    /// them); `Err(fenced)` when it failed.
    fn settled(
        &mut self,
        landed: Result<(Batch, Result<(), LogError>), oneshot::error::RecvError>,
    ) -> Result<(), bool> {
        let Some((_, mut pending)) = self.in_flight.take() else {
            return Ok(());
        };
        // A closed channel: the committer died with the batch, whose fate
        // is unknown; nothing of it is acknowledged.
        let (batch, appended) = landed.unwrap_or_else(|_| {
            let stopped = LogError::Corrupt("the group committer stopped".to_owned());
            (Batch::default(), Err(stopped))
        });
        pending.batch = batch;
        match appended {
            Ok(()) => {
                self.conclude(pending);
                Ok(())
            }
            Err(error) => {
                let fenced = matches!(error, LogError::Fenced { .. });
                tracing::error!(shard = self.shard, epoch = self.epoch, error = %auction_platform::error::DisplayChain(&error), "append failed; nothing of the batch is acknowledged");
                self.fail(pending, fenced);
                Err(fenced)
            }
        }
    }

    /// Claims the keys of `requests` this shard has no outcome for yet (see
    /// [`Claims`]) for the batch in `pending`; answers at once, and drops,
    /// the requests whose key another shard of this node is deciding.
    fn claim(&mut self, requests: Vec<Request>, pending: &mut Pending) -> Vec<Request> {
        let mut claimed = Vec::new();
        let mut kept = Vec::with_capacity(requests.len());
        for request in requests {
            let Some(key) = request.key() else {
                kept.push(request);
                continue;
            };
            let outcome_key = (key.caller, key.method, key.request_id.clone());
            if self.outcomes.contains_key(&outcome_key) {
                kept.push(request);
            } else if self.claims.claim(&outcome_key, self.shard) {
                claimed.push(outcome_key);
                kept.push(request);
            } else {
                let reused = BiddingError::IdempotencyKeyReused(outcome_key.2);
                let _ = request.into_reply().send(Err(reused));
            }
        }
        if !claimed.is_empty() {
            pending.claimed.push(Claimed {
                claims: Arc::clone(&self.claims),
                keys: claimed,
            });
        }
        kept
    }

    async fn prefetch_outcomes(&mut self, requests: &[Request]) -> Result<(), LogError> {
        let keys: Vec<(Uuid, &'static str, String)> = requests
            .iter()
            .filter_map(Request::key)
            .filter(|key| {
                !self
                    .outcomes
                    .contains_key(&(key.caller, key.method, key.request_id.clone()))
            })
            .map(|key| (key.caller, key.method, key.request_id.clone()))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        for row in self.log.find_outcomes_together(keys).await? {
            let outcome: Outcome = serde_json::from_str(&row.outcome)
                .map_err(|error| LogError::Corrupt(format!("outcome: {error}")))?;
            // Only methods of this version are stored; another is skipped.
            let Some(method) = static_method(&row.method) else {
                continue;
            };
            self.remember(
                (row.caller, method, row.request_id),
                row.fingerprint,
                outcome,
            );
        }
        Ok(())
    }

    fn remember(&mut self, key: OutcomeKey, fingerprint: String, outcome: Outcome) {
        if self
            .outcomes
            .insert(key.clone(), (fingerprint, outcome))
            .is_none()
        {
            self.outcome_order.push_back(key);
        }
        while self.outcome_order.len() > OUTCOME_CACHE {
            if let Some(oldest) = self.outcome_order.pop_front() {
                self.outcomes.remove(&oldest);
            }
        }
    }

    async fn handle(&mut self, request: Request, now: Timestamp, pending: &mut Pending) {
        match request {
            Request::Read {
                auction_id,
                viewer,
                reply,
            } => {
                let result = match self.load(auction_id).await {
                    Ok(true) => match self.auctions.get(&auction_id) {
                        Some(live) => Ok(receipt(auction_id, live, Vec::new(), viewer, now)),
                        None => Err(not_found(auction_id)),
                    },
                    Ok(false) => Err(not_found(auction_id)),
                    Err(error) => Err(error),
                };
                pending.replies.push((reply, result));
            }
            Request::Create {
                spec,
                metadata,
                key,
                reply,
            } => {
                if let Some(replayed) = self.replay(&key) {
                    pending.replies.push((reply, replayed));
                    return;
                }
                let auction_id = Uuid::from_u128(spec.auction_id.0);
                let outcome = match self.load(auction_id).await {
                    Err(error) => {
                        // Transient: not remembered, the retry runs again.
                        pending.replies.push((reply, Err(error)));
                        return;
                    }
                    Ok(true) => Outcome::Refused(Refusal::new(
                        Code::AlreadyExists,
                        "AUCTION_EXISTS",
                        format!("auction {auction_id} already exists"),
                    )),
                    Ok(false) => self.create(auction_id, *spec, metadata, now, pending),
                };
                self.record(key, auction_id, outcome, now, reply, pending);
            }
            Request::Update {
                auction_id,
                actor,
                patch,
                key,
                reply,
            } => {
                self.handle_update((auction_id, actor, patch), key, reply, now, pending)
                    .await;
            }
            Request::Apply {
                auction_id,
                actor,
                action,
                expected_sequence,
                key,
                reply,
            } => {
                if let Some(replayed) = self.replay(&key) {
                    pending.replies.push((reply, replayed));
                    return;
                }
                let outcome = match self.load(auction_id).await {
                    Err(error) => {
                        pending.replies.push((reply, Err(error)));
                        return;
                    }
                    Ok(false) => Outcome::Refused(Refusal::new(
                        Code::NotFound,
                        "AUCTION_NOT_FOUND",
                        format!("no auction {auction_id}"),
                    )),
                    Ok(true) => {
                        let command = Command {
                            request_id: auction_engine::RequestId(request_number(&key)),
                            actor,
                            received_at: now,
                            action,
                        };
                        self.apply(auction_id, command, expected_sequence, now, pending)
                    }
                };
                self.record(key, auction_id, outcome, now, reply, pending);
            }
        }
    }

    async fn handle_update(
        &mut self,
        (auction_id, actor, patch): (Uuid, Actor, Box<crate::update::Patch>),
        key: IdempotencyKey,
        reply: Reply,
        now: Timestamp,
        pending: &mut Pending,
    ) {
        if let Some(replayed) = self.replay(&key) {
            pending.replies.push((reply, replayed));
            return;
        }
        let outcome = match self.load(auction_id).await {
            Err(error) => {
                pending.replies.push((reply, Err(error)));
                return;
            }
            Ok(false) => Outcome::Refused(Refusal::new(
                Code::NotFound,
                "AUCTION_NOT_FOUND",
                format!("no auction {auction_id}"),
            )),
            Ok(true) => self.update(auction_id, actor, &patch, now, pending),
        };
        // A lost race (ABORTED VERSION_CONFLICT) is not remembered: the
        // contract lets a retry with the same key run again.
        if let Outcome::Refused(refusal) = &outcome
            && refusal.code == Code::Aborted as i32
        {
            pending.replies.push((reply, outcome.into_result()));
            return;
        }
        self.record(key, auction_id, outcome, now, reply, pending);
    }

    /// The remembered answer to a retry, or ALREADY_EXISTS when the key was
    /// used with different content; `None` for a new request.
    fn replay(&self, key: &IdempotencyKey) -> Option<Result<Receipt, BiddingError>> {
        let (fingerprint, outcome) =
            self.outcomes
                .get(&(key.caller, key.method, key.request_id.clone()))?;
        if *fingerprint != key.fingerprint {
            return Some(Err(BiddingError::IdempotencyKeyReused(
                key.request_id.clone(),
            )));
        }
        Some(outcome.clone().into_result())
    }

    fn record(
        &mut self,
        key: IdempotencyKey,
        auction_id: Uuid,
        outcome: Outcome,
        now: Timestamp,
        reply: Reply,
        pending: &mut Pending,
    ) {
        match serde_json::to_string(&outcome) {
            Ok(text) => pending.batch.outcomes.push(OutcomeRow {
                caller: key.caller,
                method: key.method.to_owned(),
                request_id: key.request_id.clone(),
                auction_id,
                fingerprint: key.fingerprint.clone(),
                outcome: text,
                at_ms: now.unix_ms(),
            }),
            Err(error) => {
                pending.replies.push((
                    reply,
                    Err(BiddingError::Internal(format!("outcome: {error}"))),
                ));
                return;
            }
        }
        let cache_key = (key.caller, key.method, key.request_id);
        pending.new_outcomes.push(cache_key.clone());
        self.remember(cache_key, key.fingerprint, outcome.clone());
        pending.replies.push((reply, outcome.into_result()));
    }

    fn create(
        &mut self,
        auction_id: Uuid,
        spec: AuctionSpec,
        metadata: Metadata,
        now: Timestamp,
        pending: &mut Pending,
    ) -> Outcome {
        let auction = match Auction::new(spec.clone()) {
            Ok(auction) => auction,
            Err(error) => {
                let mut refusal = Refusal::new(
                    Code::InvalidArgument,
                    "PARAMETERS_INVALID",
                    error.to_string(),
                );
                refusal
                    .metadata
                    .insert("engine_reason".to_owned(), error.reason().to_owned());
                return Outcome::Refused(refusal);
            }
        };
        let (spec_text, metadata_text) = match (
            serde_json::to_string(&spec),
            serde_json::to_string(&metadata),
        ) {
            (Ok(spec_text), Ok(metadata_text)) => (spec_text, metadata_text),
            (Err(error), _) | (_, Err(error)) => {
                return Outcome::Refused(Refusal::new(
                    Code::Internal,
                    "INTERNAL_ERROR",
                    error.to_string(),
                ));
            }
        };
        pending.batch.new_auctions.push(NewAuction {
            auction_id,
            spec: spec_text,
            metadata: metadata_text,
            status: status_name(auction.status()),
            finished: auction.status().is_finished(),
            created_at_ms: now.unix_ms(),
        });
        pending.touched.insert(auction_id);
        pending.created.push(auction_id);
        let mut live = Live {
            auction,
            metadata: Arc::new(metadata),
            armed: None,
            snapshot_seq: 0,
            leader: None,
            list_order: None,
        };
        let view = live.auction.view();
        stage_list_order(auction_id, &mut live, &view, pending);
        // A start time already passed opens the auction at once (a status
        // change from the one the new row is inserted with).
        let status_before = live.auction.status();
        let mut events = Vec::new();
        if let Err(error) = tick_due(&mut live.auction, now, &mut events) {
            tracing::error!(%auction_id, %error, "first tick failed");
        }
        self.stage(auction_id, &mut live, &events, status_before, pending);
        rearm(&mut self.timers, auction_id, &mut live);
        let receipt = receipt(auction_id, &live, events, None, now);
        self.auctions.insert(auction_id, live);
        Outcome::Accepted(Box::new(receipt))
    }

    fn apply(
        &mut self,
        auction_id: Uuid,
        command: Command,
        expected_sequence: Option<u64>,
        now: Timestamp,
        pending: &mut Pending,
    ) -> Outcome {
        let Some(mut live) = self.auctions.remove(&auction_id) else {
            return Outcome::Refused(Refusal::new(
                Code::NotFound,
                "AUCTION_NOT_FOUND",
                format!("no auction {auction_id}"),
            ));
        };
        let status_before = live.auction.status();
        let mut events = Vec::new();
        // Timers first: a bid is never judged against a clock that should
        // already have closed the auction.
        let ticked = tick_due(&mut live.auction, now, &mut events);
        let now = live
            .auction
            .last_event_at()
            .map_or(now, |last| now.max(last));
        // The state the caller saw must still be current (after the timers:
        // a countdown that ran out is a change they have not seen).
        let current_sequence = live.auction.next_seq();
        if let Some(expected) = expected_sequence
            && ticked.is_ok()
            && expected != current_sequence
        {
            self.stage(auction_id, &mut live, &events, status_before, pending);
            if !events.is_empty() {
                pending.touched.insert(auction_id);
            }
            rearm(&mut self.timers, auction_id, &mut live);
            self.auctions.insert(auction_id, live);
            return Outcome::Refused(crate::live::version_conflict(expected, current_sequence));
        }
        let applied =
            ticked.and_then(|()| live.auction.apply(command, now, &mut events).map(|_| ()));
        if !events.is_empty() {
            pending.touched.insert(auction_id);
        }
        self.stage(auction_id, &mut live, &events, status_before, pending);
        rearm(&mut self.timers, auction_id, &mut live);
        // The answer shows the state after the command and the events the
        // command (and any due timer) caused.
        let outcome = match applied {
            Ok(()) => Outcome::Accepted(Box::new(receipt(
                auction_id,
                &live,
                events,
                Some(UserId(command.actor.user_id.0)),
                now,
            ))),
            Err(rejection) => Outcome::Refused(Refusal::from(&rejection)),
        };
        self.auctions.insert(auction_id, live);
        outcome
    }

    /// Replaces a scheduled auction's spec (the engine judges), staging the
    /// new spec for the log with the `Updated` event.
    fn update(
        &mut self,
        auction_id: Uuid,
        actor: Actor,
        patch: &crate::update::Patch,
        now: Timestamp,
        pending: &mut Pending,
    ) -> Outcome {
        let Some(mut live) = self.auctions.remove(&auction_id) else {
            return Outcome::Refused(Refusal::new(
                Code::NotFound,
                "AUCTION_NOT_FOUND",
                format!("no auction {auction_id}"),
            ));
        };
        let status_before = live.auction.status();
        let mut events = Vec::new();
        // Timers first: an auction due to open opens, and is then no longer
        // editable.
        let ticked = tick_due(&mut live.auction, now, &mut events);
        let now = live
            .auction
            .last_event_at()
            .map_or(now, |last| now.max(last));
        let result = match ticked {
            Err(rejection) => Err(Refusal::from(&rejection)),
            Ok(()) => crate::update::apply(
                auction_id,
                &mut live.auction,
                &live.metadata,
                actor,
                patch,
                now,
                &mut events,
            ),
        };
        if let Ok(metadata) = &result {
            match (
                serde_json::to_string(&live.auction.spec()),
                serde_json::to_string(metadata),
            ) {
                (Ok(spec), Ok(metadata)) => {
                    pending.batch.spec_updates.push(crate::log::SpecUpdate {
                        auction_id,
                        spec,
                        metadata,
                    });
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(%auction_id, %error, "updated spec not serialisable");
                }
            }
            live.metadata = Arc::new(metadata.clone());
        }
        if !events.is_empty() {
            pending.touched.insert(auction_id);
        }
        self.stage(auction_id, &mut live, &events, status_before, pending);
        rearm(&mut self.timers, auction_id, &mut live);
        let outcome = match result {
            Ok(_) => Outcome::Accepted(Box::new(receipt(auction_id, &live, events, None, now))),
            Err(refusal) => Outcome::Refused(refusal),
        };
        self.auctions.insert(auction_id, live);
        outcome
    }

    /// Fires every timer due at `now`.
    fn fire_timers(&mut self, now: Timestamp, pending: &mut Pending) {
        while let Some(&(deadline, auction_id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(mut live) = self.auctions.remove(&auction_id) else {
                continue;
            };
            live.armed = None;
            let status_before = live.auction.status();
            let mut events = Vec::new();
            let refused = match tick_due(&mut live.auction, now, &mut events) {
                Ok(()) => false,
                Err(rejection) => {
                    tracing::error!(%auction_id, %rejection, "timer tick refused; retrying in 1 s");
                    true
                }
            };
            if !events.is_empty() {
                pending.touched.insert(auction_id);
            }
            self.stage(auction_id, &mut live, &events, status_before, pending);
            rearm(&mut self.timers, auction_id, &mut live);
            if refused
                && let Some(deadline) = live.armed
                && deadline <= now
            {
                // The engine still owes this deadline: try again later,
                // not at once (that would loop here forever).
                self.timers.remove(&(deadline, auction_id));
                let retry = now.saturating_add_ms(TICK_RETRY_MS);
                self.timers.insert((retry, auction_id));
                live.armed = Some(retry);
            }
            self.auctions.insert(auction_id, live);
        }
    }

    /// Adds an auction's new events (and status change, snapshot) to the batch.
    fn stage(
        &self,
        auction_id: Uuid,
        live: &mut Live,
        events: &[Event],
        status_before: AuctionStatus,
        pending: &mut Pending,
    ) {
        if events.is_empty() {
            return;
        }
        for event in events {
            match serde_json::to_string(event) {
                Ok(text) => pending.batch.events.push(EventRow {
                    auction_id,
                    seq: event.seq,
                    at_ms: event.at.unix_ms(),
                    event: text,
                }),
                Err(error) => tracing::error!(%auction_id, %error, "event not serialisable"),
            }
        }
        let status = live.auction.status();
        if status != status_before {
            pending.batch.status_changes.push(StatusChange {
                auction_id,
                status: status_name(status),
                finished: status.is_finished(),
            });
        }
        let last_seq = live.auction.next_seq().saturating_sub(1);
        if last_seq.saturating_sub(live.snapshot_seq) >= SNAPSHOT_EVERY_EVENTS
            || status.is_finished()
        {
            match serde_json::to_string(&live.auction) {
                Ok(state) => {
                    pending
                        .batch
                        .snapshots
                        .retain(|snapshot| snapshot.auction_id != auction_id);
                    pending.batch.snapshots.push(Snapshot {
                        auction_id,
                        seq: last_seq,
                        state,
                    });
                    live.snapshot_seq = last_seq;
                }
                Err(error) => tracing::error!(%auction_id, %error, "snapshot not serialisable"),
            }
        }
        // The per-user index, in the same batch (and transaction).
        if let Some(last) = events.last() {
            pending.batch.activity.extend(crate::activity::rows(
                auction_id,
                &live.auction,
                &live.metadata,
                events,
                live.leader,
                last.at,
            ));
        }
        live.leader = live.auction.leader();
        let view = live.auction.view();
        stage_list_order(auction_id, live, &view, pending);
        pending.batch.outbox.extend(crate::bus_events::envelopes(
            auction_id,
            events,
            &view,
            &live.metadata,
        ));
        match pending
            .published
            .iter_mut()
            .find(|(id, _)| *id == auction_id)
        {
            Some((_, published)) => published.extend_from_slice(events),
            None => pending.published.push((auction_id, events.to_vec())),
        }
    }

    /// Hands a commit to the market feed and to the auctions' watchers,
    /// computing each auction's view once.
    fn publish(&self, created: &[Uuid], published: Vec<(Uuid, Vec<Event>)>) {
        let now = self.clock.now();
        let mut items = Vec::new();
        for auction_id in created {
            if let Some(live) = self.auctions.get(auction_id) {
                let state =
                    crate::convert::state(*auction_id, &live.auction.view(), &live.metadata, now);
                items.push(market::MarketItem {
                    sequence: 0,
                    at: now,
                    event_type: auction_proto::v1::MarketEventType::Scheduled,
                    auction_sequence: state.sequence,
                    category_path_ids: live.metadata.category_path_ids.clone(),
                    state,
                });
            }
        }
        for (auction_id, events) in published {
            let Some(live) = self.auctions.get(&auction_id) else {
                continue;
            };
            let view = live.auction.view();
            // The wire state is built only when the feed has something to say.
            if events
                .iter()
                .any(|event| market::event_type(&event.kind).is_some())
            {
                let state = crate::convert::state(auction_id, &view, &live.metadata, now);
                items.extend(market::items(
                    &events,
                    &state,
                    &live.metadata.category_path_ids,
                ));
            }
            let published = Arc::new(Published::new(
                auction_id,
                events,
                view,
                Arc::clone(&live.metadata),
            ));
            if let Some(fanout) = &self.fanout {
                fanout.publish(Arc::clone(&published));
            }
            self.hub.publish(published);
        }
        self.market.publish(items);
    }

    /// A batch landed in the log: answers and publishes it.
    fn conclude(&mut self, pending: Pending) {
        let Pending {
            batch,
            replies,
            published,
            touched: _,
            new_outcomes: _,
            created,
            claimed,
        } = pending;
        // Its outcomes are in the log now: other shards find them there.
        drop(claimed);
        if !batch.outbox.is_empty() {
            self.relay.wake();
        }
        self.hub
            .activity
            .notify(batch.activity.iter().map(|row| row.user_id));
        if let Some(fanout) = &self.fanout
            && !batch.activity.is_empty()
        {
            let users: HashSet<Uuid> = batch.activity.iter().map(|row| row.user_id).collect();
            fanout.publish_activity(users.into_iter().collect());
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        self.publish(&created, published);
        let finished: Vec<Uuid> = batch
            .status_changes
            .iter()
            .filter(|change| change.finished)
            .map(|change| change.auction_id)
            .collect();
        for auction_id in finished {
            self.schedule_eviction(auction_id);
        }
    }

    /// A batch did not land (or was prepared on one that did not): answers
    /// NOT_LEADER when fenced, else UNAVAILABLE, and forgets what it changed
    /// in memory, which must not run ahead of the log.
    fn fail(&mut self, pending: Pending, fenced: bool) {
        let Pending {
            replies,
            touched,
            new_outcomes,
            ..
        } = pending;
        for (reply, _) in replies {
            let answer = if fenced {
                BiddingError::NotLeader { shard: self.shard }
            } else {
                BiddingError::Unavailable(LogError::Corrupt("the append failed".to_owned()))
            };
            let _ = reply.send(Err(answer));
        }
        for auction_id in touched {
            if let Some(live) = self.auctions.remove(&auction_id) {
                if let Some(deadline) = live.armed {
                    self.timers.remove(&(deadline, auction_id));
                }
                if !fenced {
                    self.reload.push(auction_id);
                }
            }
        }
        for key in new_outcomes {
            self.outcomes.remove(&key);
        }
    }
}

/// A refused timer tick is retried after this long.
const TICK_RETRY_MS: i64 = 1_000;

async fn sleep_for(milliseconds: Option<i64>) {
    match milliseconds {
        Some(milliseconds) => {
            let milliseconds = u64::try_from(milliseconds.max(0)).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(milliseconds)).await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Delivers every timer of `auction` due at `now`.
/// An auction as the log holds it: the latest snapshot (or the spec) with
/// the events after it replayed; with its metadata and the snapshot's
/// sequence. `None` when the log has no such auction.
pub async fn rebuild(
    log: &Log,
    auction_id: Uuid,
) -> Result<Option<(Auction, Metadata, u64)>, BiddingError> {
    let Some(stored) = log
        .load_auction(auction_id)
        .await
        .map_err(BiddingError::Unavailable)?
    else {
        return Ok(None);
    };
    let corrupt = |what: &str, error: &dyn std::fmt::Display| {
        BiddingError::Internal(format!("auction {auction_id}: {what}: {error}"))
    };
    let metadata: Metadata =
        serde_json::from_str(&stored.metadata).map_err(|error| corrupt("metadata", &error))?;
    let (mut auction, snapshot_seq) = match &stored.snapshot {
        Some((seq, state)) => (
            serde_json::from_str::<Auction>(state).map_err(|error| corrupt("snapshot", &error))?,
            *seq,
        ),
        None => {
            let spec: AuctionSpec =
                serde_json::from_str(&stored.spec).map_err(|error| corrupt("spec", &error))?;
            (
                Auction::new(spec).map_err(|error| corrupt("spec", &error))?,
                0,
            )
        }
    };
    for text in &stored.events {
        let event: Event = serde_json::from_str(text).map_err(|error| corrupt("event", &error))?;
        auction
            .apply_event(&event)
            .map_err(|error| corrupt("replay", &error))?;
    }
    Ok(Some((auction, metadata, snapshot_seq)))
}

fn tick_due(
    auction: &mut Auction,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), auction_engine::Rejection> {
    for _ in 0..MAX_TICKS_PER_AUCTION {
        match auction.next_deadline() {
            Some(deadline) if deadline <= now => {
                let now = auction.last_event_at().map_or(now, |last| now.max(last));
                auction.apply(Command::tick(now), now, events)?;
            }
            Some(_) | None => return Ok(()),
        }
    }
    Ok(())
}

fn rearm(timers: &mut BTreeSet<(Timestamp, Uuid)>, auction_id: Uuid, live: &mut Live) {
    let next = live.auction.next_deadline();
    if next == live.armed {
        return;
    }
    if let Some(old) = live.armed.take() {
        timers.remove(&(old, auction_id));
    }
    if let Some(deadline) = next {
        timers.insert((deadline, auction_id));
        live.armed = Some(deadline);
    }
}

fn receipt(
    auction_id: Uuid,
    live: &Live,
    events: Vec<Event>,
    viewer: Option<UserId>,
    now: Timestamp,
) -> Receipt {
    Receipt {
        auction_id,
        view: live.auction.view(),
        metadata: (*live.metadata).clone(),
        events,
        viewer: viewer.map(|user| viewer_facts(&live.auction, user)),
        at_ms: now.unix_ms(),
    }
}

fn viewer_facts(auction: &Auction, user: UserId) -> ViewerFacts {
    ViewerFacts {
        user_id: user.0,
        bid_status: auction.bid_status(user, None),
        own_bid: auction.own_bid(user, None),
    }
}

/// The refusal for an auction nobody knows.
pub fn not_found(auction_id: Uuid) -> BiddingError {
    BiddingError::Refused(Refusal::new(
        Code::NotFound,
        "AUCTION_NOT_FOUND",
        format!("no auction {auction_id}"),
    ))
}

/// Where an auction sorts in ListAuctions: its current end (English,
/// sealed), a live lot's session start then its number, or last when there
/// is neither (Dutch, a lot with no session start).
pub fn list_order(view: &AuctionView, metadata: &Metadata) -> ListOrder {
    use auction_engine::FormatView;
    match &view.format {
        FormatView::English { end_at, .. } | FormatView::Sealed { end_at, .. } => ListOrder {
            end_ms: end_at.unix_ms(),
            lot_number: 0,
        },
        FormatView::Live { .. } => ListOrder {
            // A lot created without a session start has start_at 0.
            end_ms: match view.start_at.unix_ms() {
                0 => i64::MAX,
                start_ms => start_ms,
            },
            lot_number: metadata
                .live_lot
                .as_ref()
                .map_or(0, |lot| i64::from(lot.lot_number)),
        },
        FormatView::Dutch { .. } => ListOrder {
            end_ms: i64::MAX,
            lot_number: 0,
        },
    }
}

/// Stages an auction's ListAuctions place for the log when it is new or
/// moved (a soft-close extension, an update of the schedule).
fn stage_list_order(auction_id: Uuid, live: &mut Live, view: &AuctionView, pending: &mut Pending) {
    let order = list_order(view, &live.metadata);
    if live.list_order == Some(order) {
        return;
    }
    live.list_order = Some(order);
    pending
        .batch
        .list_orders
        .retain(|change| change.auction_id != auction_id);
    pending
        .batch
        .list_orders
        .push(ListOrderChange { auction_id, order });
}

/// The stable name of an engine status, as stored.
pub fn status_name(status: AuctionStatus) -> &'static str {
    match status {
        AuctionStatus::Scheduled => "scheduled",
        AuctionStatus::Open => "open",
        AuctionStatus::Extended => "extended",
        AuctionStatus::Closed => "closed",
        AuctionStatus::Unsold => "unsold",
        AuctionStatus::Cancelled => "cancelled",
    }
}

/// The engine's numeric request id for a key: a stable hash of the caller's
/// key (the engine only carries it into events; idempotency is decided on
/// the full key above).
fn request_number(key: &IdempotencyKey) -> u128 {
    let mut name = key.caller.as_bytes().to_vec();
    name.extend_from_slice(key.method.as_bytes());
    name.extend_from_slice(key.request_id.as_bytes());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, &name).as_u128()
}

/// The methods that take idempotency keys, as `'static` names.
pub const METHODS: &[&str] = &[
    "CreateAuction",
    "CancelAuction",
    "UpdateAuction",
    "PlaceBid",
    "SetMaxBid",
    "PlaceSealedBid",
    "WithdrawSealedBid",
    "AcceptDutchPrice",
    "BuyItNow",
    "PlaceAbsenteeBid",
    "OpenLot",
    "CallFairWarning",
    "HammerLot",
    "PassLot",
    "ReopenLot",
    "UndoLastBid",
    "RetractBid",
    "FinalizeLot",
];

fn static_method(method: &str) -> Option<&'static str> {
    METHODS.iter().find(|known| **known == method).copied()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use auction_platform::MeshService as _;
    use auction_platform::bus::in_process::InProcessBus;
    use auction_platform::bus::outbox::{Relay, RelayOptions};
    use auction_platform::config::Config;
    use auction_proto::v1 as pb;

    use super::*;

    #[derive(Debug)]
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix_ms(self.0.load(Ordering::SeqCst))
        }
    }

    // Proves a claimed key is refused to other shards until every batch of
    // its shard that claimed it has been dropped.
    #[test]
    fn claims_hold_a_key_for_one_shard_until_released() {
        let claims = Arc::new(Claims::default());
        let key: OutcomeKey = (Uuid::now_v7(), "PlaceBid", "r-1".to_owned());
        assert!(claims.claim(&key, 3));
        assert!(claims.claim(&key, 3), "the same shard again (next batch)");
        assert!(!claims.claim(&key, 4));
        let first = Claimed {
            claims: Arc::clone(&claims),
            keys: vec![key.clone()],
        };
        let second = Claimed {
            claims: Arc::clone(&claims),
            keys: vec![key.clone()],
        };
        drop(first);
        assert!(!claims.claim(&key, 4), "still held by the second batch");
        drop(second);
        assert!(claims.claim(&key, 4));
        assert!(claims.lock().contains_key(&key));
    }

    async fn worker(data: &tempfile::TempDir, clock: Arc<ManualClock>) -> Worker {
        let mut config = Config::embedded_default();
        config.storage.data_dir = data.path().to_owned();
        let database = auction_platform::Database::open(
            &config.storage,
            crate::Service::SCHEMA,
            crate::Service::migrations(),
        )
        .await
        .unwrap();
        let shutdown = Shutdown::new();
        let relay = Arc::new(Relay::spawn(
            database.clone(),
            Arc::new(InProcessBus::new(3)),
            shutdown,
            RelayOptions::default(),
        ));
        let log = Log::new(database);
        log.begin_term(0, 1, "test", 0).await.unwrap();
        Worker {
            shard: 0,
            epoch: 1,
            log,
            hub: Arc::new(Hub::new(4)),
            market: Arc::new(MarketFeed::new(clock.now())),
            relay,
            clock,
            fanout: None,
            claims: Arc::default(),
            auctions: HashMap::new(),
            timers: BTreeSet::new(),
            outcomes: HashMap::new(),
            outcome_order: VecDeque::new(),
            evictions: VecDeque::new(),
            in_flight: None,
            reload: Vec::new(),
        }
    }

    fn english(auction_id: Uuid, start_ms: i64, end_ms: i64) -> AuctionSpec {
        let time = |ms: i64| prost_types::Timestamp {
            seconds: ms / 1_000,
            nanos: 0,
        };
        let request = pb::CreateAuctionRequest {
            request_id: "create".to_owned(),
            seller_id: Uuid::now_v7().to_string(),
            title: "lot".to_owned(),
            parameters: Some(pb::AuctionParameters {
                format: pb::AuctionFormat::English as i32,
                format_parameters: Some(pb::auction_parameters::FormatParameters::English(
                    pb::EnglishParameters {
                        starting_price: Some(pb::Money {
                            currency: "USD".to_owned(),
                            amount: "10".to_owned(),
                        }),
                        ..pb::EnglishParameters::default()
                    },
                )),
            }),
            start_time: Some(time(start_ms)),
            end_time: Some(time(end_ms)),
            ..pb::CreateAuctionRequest::default()
        };
        crate::convert::spec(&request, auction_id, Uuid::now_v7())
            .unwrap()
            .0
    }

    // Proves a finished auction leaves memory after the grace period (a
    // running one never does), and that a later read reloads its final
    // state from the log.
    #[tokio::test]
    async fn finished_auctions_leave_memory_and_reload_on_read() {
        let data = tempfile::tempdir().unwrap();
        let start = 1_800_000_000_000;
        let clock = Arc::new(ManualClock(AtomicI64::new(start)));
        let mut worker = worker(&data, Arc::clone(&clock)).await;
        let ending = Uuid::now_v7();
        let running = Uuid::now_v7();
        let (reply, created) = oneshot::channel();
        let (reply_running, created_running) = oneshot::channel();
        let key = |request_id: &str| IdempotencyKey {
            caller: Uuid::nil(),
            method: "CreateAuction",
            request_id: request_id.to_owned(),
            fingerprint: request_id.to_owned(),
        };
        assert!(
            worker
                .process(vec![
                    Request::Create {
                        spec: Box::new(english(ending, start, start + 10_000)),
                        metadata: Metadata::default(),
                        key: key("a"),
                        reply,
                    },
                    Request::Create {
                        spec: Box::new(english(running, start, start + 3_600_000)),
                        metadata: Metadata::default(),
                        key: key("b"),
                        reply: reply_running,
                    },
                ])
                .await
        );
        worker.settle().await.unwrap();
        created.await.unwrap().unwrap();
        created_running.await.unwrap().unwrap();
        // The first closes (unsold) at its end; still in memory for a while.
        clock.0.store(start + 11_000, Ordering::SeqCst);
        assert!(worker.process(Vec::new()).await);
        worker.settle().await.unwrap();
        assert!(worker.auctions[&ending].auction.status().is_finished());
        clock.0.store(
            start + 11_000 + EVICT_FINISHED_AFTER_MS + 1,
            Ordering::SeqCst,
        );
        assert!(worker.process(Vec::new()).await);
        worker.settle().await.unwrap();
        assert!(
            !worker.auctions.contains_key(&ending),
            "the finished auction left memory"
        );
        assert!(
            worker.auctions.contains_key(&running),
            "the running one stays"
        );
        // A read reloads it, final.
        let (reply, read) = oneshot::channel();
        assert!(
            worker
                .process(vec![Request::Read {
                    auction_id: ending,
                    viewer: None,
                    reply,
                }])
                .await
        );
        let receipt = read.await.unwrap().unwrap();
        assert!(receipt.view.status.is_finished());
    }
}
