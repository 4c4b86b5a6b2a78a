//! The durable shard log on PostgreSQL or SQLite.
//!
//! A shard appends everything a batch of commands produced (new auctions,
//! engine events, status changes, snapshots, request outcomes) in ONE
//! transaction and answers the commands only after it commits: group commit.
//! Every append carries the leader's epoch and is fenced in the same
//! transaction by `shard_epochs`: the row is raised to the append's epoch only
//! when it is not higher already, so an append from a lower (deposed) epoch
//! changes nothing and is refused with [`LogError::Fenced`].
//!
//! Shard writers hand their batches to one group committer per node
//! ([`Log::submit`]): every batch waiting when the previous transaction ends
//! goes into the next one, each shard fenced on its own. With many auctions
//! a shard's batch holds a few bids; 64 shards committing alone paid 64
//! transactions (and, on SQLite, took turns on its one write lock) for what
//! one transaction and one fsync now carry.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use auction_platform::database::{BeginWrite as _, Writer};
use auction_platform::{Database, on_pool};
use sqlx::{QueryBuilder, Row};

mod rows;
use rows::{GroupParts, GroupRows as _, ROWS_PER_INSERT};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// A log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A newer leader has appended to this shard: this one is deposed.
    #[error("shard {shard}: epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        /// The shard.
        shard: u32,
        /// The epoch of the refused append.
        epoch: u64,
        /// The epoch that has appended since.
        current: u64,
    },
    /// Another node already began a term under this epoch.
    #[error("shard {shard}: epoch {epoch} was already claimed by node {node}")]
    EpochClaimed {
        /// The shard.
        shard: u32,
        /// The epoch.
        epoch: u64,
        /// The node that claimed it first.
        node: String,
    },
    /// The database failed.
    #[error("bidding log")]
    Database(#[from] sqlx::Error),
    /// A value could not be stored or read back.
    #[error("bidding log value: {0}")]
    Corrupt(String),
}

/// A new auction row.
#[derive(Debug, Clone)]
pub struct NewAuction {
    /// Its id.
    pub auction_id: Uuid,
    /// The engine's spec, JSON.
    pub spec: String,
    /// The catalog's metadata, JSON.
    pub metadata: String,
    /// The engine status name.
    pub status: &'static str,
    /// Whether the status is final.
    pub finished: bool,
    /// Creation time.
    pub created_at_ms: i64,
}

/// One engine event, serialised.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// The auction.
    pub auction_id: Uuid,
    /// Its per-auction sequence number.
    pub seq: u64,
    /// When it happened.
    pub at_ms: i64,
    /// The engine event, JSON.
    pub event: String,
}

/// An auction whose status changed in the batch.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The auction.
    pub auction_id: Uuid,
    /// The engine status name.
    pub status: &'static str,
    /// Whether the status is final.
    pub finished: bool,
}

/// Where an auction sorts in ListAuctions ("soonest end first; live lots:
/// by session start, then lot number"); the auction id breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOrder {
    /// The current end (English, sealed: soft-close extensions included), a
    /// live lot's session start, or `i64::MAX` when there is none (Dutch, a
    /// lot without a session start): those sort last.
    pub end_ms: i64,
    /// A live lot's number in its session; 0 for other formats.
    pub lot_number: i64,
}

/// An auction whose [`ListOrder`] is new (a created or reloaded auction) or
/// moved (an extension, an update).
#[derive(Debug, Clone)]
pub struct ListOrderChange {
    /// The auction.
    pub auction_id: Uuid,
    /// Its place now.
    pub order: ListOrder,
}

/// One auction as ListAuctions reads it, in [`ListOrder`].
#[derive(Debug, Clone)]
pub struct ListedAuction {
    /// Its id.
    pub auction_id: Uuid,
    /// Its place (with the id: the page cursor).
    pub order: ListOrder,
    /// The catalog's metadata, JSON (its category path, for filters).
    pub metadata: String,
}

/// An engine state after `seq`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The auction.
    pub auction_id: Uuid,
    /// The last event the state includes.
    pub seq: u64,
    /// The engine state, JSON.
    pub state: String,
}

/// The remembered outcome of a mutating request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRow {
    /// Who asked.
    pub caller: Uuid,
    /// The RPC method.
    pub method: String,
    /// The caller's idempotency key.
    pub request_id: String,
    /// The auction it was about.
    pub auction_id: Uuid,
    /// The request's content without its id.
    pub fingerprint: String,
    /// The answer given, JSON.
    pub outcome: String,
    /// When.
    pub at_ms: i64,
}

/// Everything one batch appends, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Auctions created by the batch.
    pub new_auctions: Vec<NewAuction>,
    /// Events, in order.
    pub events: Vec<EventRow>,
    /// Status changes.
    pub status_changes: Vec<StatusChange>,
    /// Snapshots to keep.
    pub snapshots: Vec<Snapshot>,
    /// Outcomes to remember.
    pub outcomes: Vec<OutcomeRow>,
    /// Events for other services, staged in the outbox.
    pub outbox: Vec<auction_platform::bus::Envelope>,
    /// Rows of the per-user index (activity and positions), in order.
    pub activity: Vec<ActivityRow>,
    /// Scheduled auctions whose spec (and metadata) an update replaced.
    pub spec_updates: Vec<SpecUpdate>,
    /// Auctions whose place in ListAuctions is new or moved.
    pub list_orders: Vec<ListOrderChange>,
}

/// A new spec for an auction (UpdateAuction): the log replays from it.
#[derive(Debug, Clone)]
pub struct SpecUpdate {
    /// The auction.
    pub auction_id: Uuid,
    /// The engine's new spec, JSON.
    pub spec: String,
    /// The catalog's new metadata, JSON.
    pub metadata: String,
}

/// One change of one user's index, from one event of the batch.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    /// Whose.
    pub user_id: Uuid,
    /// The auction.
    pub auction_id: Uuid,
    /// The `auction.v1.ActivityType` to append to the user's activity log;
    /// `None` changes only the position (an end the user hears of otherwise).
    pub activity_type: Option<i32>,
    /// The user's bid concerned, if any.
    pub bid_id: Option<Uuid>,
    /// When.
    pub at_ms: i64,
    /// Whether the event is a bid of the user's (it moves the position to the
    /// top of ListMyBids and clears `removed_status`).
    pub is_bid: bool,
    /// A retracted, withdrawn or expired bid (`auction.v1.BidStatus`).
    pub removed_status: Option<i32>,
    /// Whether the auction ended for the user.
    pub ended: bool,
    /// Encoded `auction.v1.AuctionState` after the batch.
    pub state: Arc<Vec<u8>>,
    /// Encoded `auction.v1.ViewerState` of the user after the batch.
    pub viewer: Vec<u8>,
}

/// One stored event of a user's activity log.
#[derive(Debug, Clone)]
pub struct StoredActivity {
    /// The per-user sequence.
    pub seq: u64,
    /// The auction.
    pub auction_id: Uuid,
    /// `auction.v1.ActivityType`.
    pub activity_type: i32,
    /// The user's bid concerned, if any.
    pub bid_id: Option<Uuid>,
    /// When.
    pub at_ms: i64,
    /// Encoded `auction.v1.AuctionState`.
    pub state: Vec<u8>,
    /// Encoded `auction.v1.ViewerState`.
    pub viewer: Vec<u8>,
}

/// One of a user's positions (an auction they bid on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPosition {
    /// The auction.
    pub auction_id: Uuid,
    /// The per-user sequence of the user's latest bid on it (orders the
    /// user's bids exactly, and is the page cursor).
    pub last_bid_seq: i64,
    /// A retracted, withdrawn or expired bid (`auction.v1.BidStatus`).
    pub removed_status: Option<i32>,
}

/// A position merged from a batch's rows for one (user, auction).
struct PositionChange {
    user_id: Uuid,
    auction_id: Uuid,
    last_bid_seq: Option<i64>,
    removed_status: Option<i32>,
    ended: bool,
    updated_at_ms: i64,
}

impl<'a> GroupParts<'a> {
    /// The rows of the `accepted` batches, `(shard, epoch, batch)`.
    fn gather(accepted: &[(i64, i64, &'a Batch)]) -> Result<Self, LogError> {
        let auctions = accepted
            .iter()
            .flat_map(|(shard, _, batch)| {
                batch
                    .new_auctions
                    .iter()
                    .map(move |auction| (*shard, auction))
            })
            .collect();
        let mut events = Vec::new();
        for (shard, epoch, batch) in accepted {
            for event in &batch.events {
                events.push((*shard, *epoch, to_i64(event.seq, "seq")?, event));
            }
        }
        // One row per auction (a multi-row upsert may not touch a row
        // twice): the latest snapshot of each.
        let mut latest: Vec<&Snapshot> = Vec::new();
        for snapshot in accepted.iter().flat_map(|(_, _, batch)| &batch.snapshots) {
            latest.retain(|kept| kept.auction_id != snapshot.auction_id);
            latest.push(snapshot);
        }
        let snapshots = latest
            .into_iter()
            .map(|snapshot| Ok((to_i64(snapshot.seq, "seq")?, snapshot)))
            .collect::<Result<Vec<_>, LogError>>()?;
        // Sorted by key: two nodes' groups take the index locks in the same
        // order, so they cannot deadlock on them.
        let mut outcomes: Vec<&OutcomeRow> = accepted
            .iter()
            .flat_map(|(_, _, batch)| &batch.outcomes)
            .collect();
        outcomes.sort_by(|a, b| {
            (a.caller, &a.method, &a.request_id).cmp(&(b.caller, &b.method, &b.request_id))
        });
        let outbox = match accepted {
            [(_, _, batch)] => std::borrow::Cow::Borrowed(batch.outbox.as_slice()),
            _ => std::borrow::Cow::Owned(
                accepted
                    .iter()
                    .flat_map(|(_, _, batch)| batch.outbox.iter().cloned())
                    .collect(),
            ),
        };
        let activity: Vec<&ActivityRow> = accepted
            .iter()
            .flat_map(|(_, _, batch)| &batch.activity)
            .collect();
        let mut counts: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
        for row in activity.iter().filter(|row| row.activity_type.is_some()) {
            *counts.entry(row.user_id).or_insert(0) += 1;
        }
        Ok(Self {
            auctions,
            events,
            snapshots,
            outcomes,
            outbox,
            activity,
            head_counts: counts.into_iter().collect(),
        })
    }
}

/// Merges a batch's rows into one change per (user, auction), in first-seen
/// order (a multi-row upsert may not touch a row twice).
fn position_changes(rows: &[(Option<i64>, &ActivityRow)]) -> Vec<PositionChange> {
    let mut changes: Vec<PositionChange> = Vec::new();
    let mut index: std::collections::HashMap<(Uuid, Uuid), usize> =
        std::collections::HashMap::new();
    for (seq, row) in rows {
        let slot = *index
            .entry((row.user_id, row.auction_id))
            .or_insert_with(|| {
                changes.push(PositionChange {
                    user_id: row.user_id,
                    auction_id: row.auction_id,
                    last_bid_seq: None,
                    removed_status: None,
                    ended: false,
                    updated_at_ms: row.at_ms,
                });
                changes.len() - 1
            });
        let Some(change) = changes.get_mut(slot) else {
            continue;
        };
        if row.is_bid && seq.is_some() {
            change.last_bid_seq = *seq;
            change.removed_status = None;
        }
        if row.removed_status.is_some() {
            change.removed_status = row.removed_status;
        }
        change.ended |= row.ended;
        change.updated_at_ms = change.updated_at_ms.max(row.at_ms);
    }
    // Deadlock-free on PostgreSQL: every batch locks rows in the same order.
    changes.sort_by_key(|change| (change.user_id, change.auction_id));
    changes
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.new_auctions.is_empty()
            && self.events.is_empty()
            && self.status_changes.is_empty()
            && self.snapshots.is_empty()
            && self.outcomes.is_empty()
            && self.outbox.is_empty()
            && self.activity.is_empty()
            && self.spec_updates.is_empty()
            && self.list_orders.is_empty()
    }
}

/// An auction as stored: what recovery needs to rebuild it.
#[derive(Debug, Clone)]
pub struct StoredAuction {
    /// Its id.
    pub auction_id: Uuid,
    /// The engine's spec, JSON.
    pub spec: String,
    /// The catalog's metadata, JSON.
    pub metadata: String,
    /// The latest snapshot (seq, state JSON), if any.
    pub snapshot: Option<(u64, String)>,
    /// The events after the snapshot (or all), in order, JSON.
    pub events: Vec<String>,
}

/// In an open transaction: raises the shard's fence to the epoch, or rolls
/// back and returns [`LogError::Fenced`] when a higher epoch holds it. The
/// upsert's WHERE refuses a lower epoch and RETURNING says so in one round
/// trip; the row lock also serialises two would-be leaders. (A macro: the
/// transaction's type differs per backend inside `on_pool!`.)
macro_rules! raise_fence {
    ($transaction:ident, $shard:expr, $shard_value:expr, $epoch:expr, $epoch_value:expr) => {
        let raised: Option<i64> = QueryBuilder::new("INSERT INTO shard_epochs (shard, epoch) VALUES (")
            .push_bind($shard_value)
            .push(", ")
            .push_bind($epoch_value)
            .push(") ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch WHERE shard_epochs.epoch <= excluded.epoch RETURNING epoch")
            .build_query_scalar()
            .fetch_optional(&mut *$transaction)
            .await?;
        if raised != Some($epoch_value) {
            let current: i64 = QueryBuilder::new("SELECT epoch FROM shard_epochs WHERE shard = ")
                .push_bind($shard_value)
                .build_query_scalar()
                .fetch_one(&mut *$transaction)
                .await?;
            $transaction.rollback().await?;
            return Err(LogError::Fenced {
                shard: $shard,
                epoch: $epoch,
                current: to_u64(current, "epoch")?,
            });
        }
    };
}

/// The bidding service's log over its database.
#[derive(Debug, Clone)]
pub struct Log {
    database: Database,
    /// The node's group committer, started by the first [`Log::submit`].
    committer: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Submission>>>,
    /// The node's outcome reader, started by the first
    /// [`Log::find_outcomes_together`].
    lookups: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Lookup>>>,
    /// How the committer's groups were written.
    written: Arc<WrittenCounts>,
}

/// How many groups the committer wrote in one statement and how many
/// statement by statement (see [`Log::groups_written`]).
#[derive(Debug, Default)]
struct WrittenCounts {
    together: std::sync::atomic::AtomicU64,
    stepwise: std::sync::atomic::AtomicU64,
}

/// Group commits landed since the log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupsWritten {
    /// In one statement (PostgreSQL).
    pub together: u64,
    /// Statement by statement (SQLite; on PostgreSQL a group whose shard
    /// had two batches, or whose one statement some fence or row refused).
    pub stepwise: u64,
}

/// A shard's outcome lookup waiting for the node's outcome reader.
#[derive(Debug)]
struct Lookup {
    keys: Vec<(Uuid, &'static str, String)>,
    reply: oneshot::Sender<Result<Vec<OutcomeRow>, LogError>>,
}

/// A shard's batch waiting for the group committer.
#[derive(Debug)]
struct Submission {
    shard: u32,
    epoch: u64,
    batch: Batch,
    reply: oneshot::Sender<(Batch, Result<(), LogError>)>,
}

/// The answer to a batch handed to the group committer: the batch back, and
/// whether it landed. (The channel closes unanswered only if the committer
/// died with the batch: its fate is then unknown, nothing is acknowledged.)
pub type Committed = oneshot::Receiver<(Batch, Result<(), LogError>)>;

/// At most this many shards' batches per group transaction (one per shard
/// normally; a shard submits its next batch only after its last committed).
const MAX_GROUP: usize = 256;

/// A `request_outcomes` row as read.
fn outcome_row<R>(row: &R) -> Result<OutcomeRow, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    Uuid: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OutcomeRow {
        caller: row.try_get("caller")?,
        method: row.try_get("method")?,
        request_id: row.try_get("request_id")?,
        auction_id: row.try_get("auction_id")?,
        fingerprint: row.try_get("fingerprint")?,
        outcome: row.try_get("outcome")?,
        at_ms: row.try_get("at_ms")?,
    })
}

fn to_i64(value: u64, what: &str) -> Result<i64, LogError> {
    i64::try_from(value).map_err(|_| LogError::Corrupt(format!("{what} {value} out of range")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, LogError> {
    u64::try_from(value).map_err(|_| LogError::Corrupt(format!("{what} {value} out of range")))
}

impl Log {
    /// The log over a migrated bidding database.
    pub fn new(database: Database) -> Self {
        Self {
            database,
            committer: Arc::new(std::sync::OnceLock::new()),
            lookups: Arc::new(std::sync::OnceLock::new()),
            written: Arc::new(WrittenCounts::default()),
        }
    }

    /// How the group commits of this log (and its clones) were written.
    pub fn groups_written(&self) -> GroupsWritten {
        use std::sync::atomic::Ordering::Relaxed;
        GroupsWritten {
            together: self.written.together.load(Relaxed),
            stepwise: self.written.stepwise.load(Relaxed),
        }
    }

    /// [`Self::find_outcomes`] for one shard's batch, read together with
    /// every other shard's lookup waiting at the same moment: over many
    /// auctions most shards look up a few new request ids each cycle, and
    /// one query for all of them costs a fraction of one query each.
    pub async fn find_outcomes_together(
        &self,
        keys: Vec<(Uuid, &'static str, String)>,
    ) -> Result<Vec<OutcomeRow>, LogError> {
        let sender = self.lookups.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(Self::new(self.database.clone()).run_lookups(receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        if sender.send(Lookup { keys, reply }).is_err() {
            return Err(LogError::Corrupt("the outcome reader stopped".to_owned()));
        }
        answer
            .await
            .map_err(|_| LogError::Corrupt("the outcome reader stopped".to_owned()))?
    }

    /// The outcome reader: takes every lookup waiting, reads their keys in
    /// one query, hands each lookup the rows of its own keys.
    async fn run_lookups(self, mut receiver: mpsc::UnboundedReceiver<Lookup>) {
        let mut waiting = Vec::new();
        while receiver.recv_many(&mut waiting, 256).await > 0 {
            let (asked, replies): (Vec<_>, Vec<_>) = waiting
                .drain(..)
                .map(|lookup| (lookup.keys, lookup.reply))
                .unzip();
            let keys: Vec<(Uuid, &str, &str)> = asked
                .iter()
                .flatten()
                .map(|(caller, method, request_id)| (*caller, *method, request_id.as_str()))
                .collect();
            match self.find_outcomes(&keys).await {
                Ok(rows) => {
                    let by_key: HashMap<(Uuid, &str, &str), &OutcomeRow> = rows
                        .iter()
                        .map(|row| {
                            (
                                (row.caller, row.method.as_str(), row.request_id.as_str()),
                                row,
                            )
                        })
                        .collect();
                    // Two shards may ask for the same key (one caller's
                    // request id on two auctions): each gets the row.
                    for (keys, reply) in asked.iter().zip(replies) {
                        let found = keys
                            .iter()
                            .filter_map(|(caller, method, request_id)| {
                                by_key
                                    .get(&(*caller, *method, request_id.as_str()))
                                    .map(|row| (*row).clone())
                            })
                            .collect();
                        let _ = reply.send(Ok(found));
                    }
                }
                Err(error) => {
                    let message = auction_platform::error::DisplayChain(&error).to_string();
                    tracing::error!(error = %message, lookups = replies.len(), "outcome lookup failed; the waiting batches are refused");
                    for reply in replies {
                        let _ = reply
                            .send(Err(LogError::Corrupt(format!("outcome lookup: {message}"))));
                    }
                }
            }
        }
    }

    /// Appends a batch for `shard` under `epoch`, atomically; refused with
    /// [`LogError::Fenced`] when a higher epoch has appended to the shard.
    /// Writes at once, in a transaction of its own; a shard writer uses
    /// [`Log::submit`], which shares a transaction with the other shards.
    pub async fn append(&self, shard: u32, epoch: u64, batch: &Batch) -> Result<(), LogError> {
        let mut results = self
            .write_group(&[(shard, epoch, batch)], &mut Writer::default())
            .await?;
        results.pop().unwrap_or(Ok(()))
    }

    /// Appends `batch` for `shard` under `epoch` through the node's group
    /// committer: every shard's batch pending at that moment lands in one
    /// transaction (one fsync instead of one per shard), and each shard
    /// learns its own result (a fenced shard is refused alone) from the
    /// returned [`Committed`]; meanwhile the shard may prepare its next batch.
    pub fn submit(&self, shard: u32, epoch: u64, batch: Batch) -> Committed {
        let sender = self.committer.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            // A log without this sender: the committer must not keep its
            // own channel open.
            let log = Self {
                written: Arc::clone(&self.written),
                ..Self::new(self.database.clone())
            };
            tokio::spawn(log.run_committer(receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        match sender.send(Submission {
            shard,
            epoch,
            batch,
            reply,
        }) {
            Ok(()) => answer,
            Err(mpsc::error::SendError(submission)) => {
                // The committer is gone (the runtime is shutting down).
                let (reply, answer) = oneshot::channel();
                let stopped = LogError::Corrupt("the group committer stopped".to_owned());
                let _ = reply.send((submission.batch, Err(stopped)));
                answer
            }
        }
    }

    /// The group committer: takes every submission waiting, writes them in
    /// one transaction, answers each. When that transaction fails as a
    /// whole (not a fence: a database error), each batch is retried alone so
    /// that one bad batch cannot fail the others.
    async fn run_committer(self, mut receiver: mpsc::UnboundedReceiver<Submission>) {
        let mut group = Vec::new();
        let mut writer = Writer::default();
        while let Some(first) = receiver.recv().await {
            group.push(first);
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(submission) => group.push(submission),
                    Err(_) => break,
                }
            }
            let items: Vec<(u32, u64, &Batch)> = group
                .iter()
                .map(|submission| (submission.shard, submission.epoch, &submission.batch))
                .collect();
            let results = match self.write_group(&items, &mut writer).await {
                Ok(results) => results,
                Err(error) if items.len() == 1 => vec![Err(error)],
                Err(error) => {
                    tracing::warn!(batches = items.len(), error = %auction_platform::error::DisplayChain(&error), "group commit failed; appending each batch alone");
                    let mut results = Vec::with_capacity(items.len());
                    for item in &items {
                        results.push(
                            match self
                                .write_group(std::slice::from_ref(item), &mut writer)
                                .await
                            {
                                Ok(mut alone) => alone.pop().unwrap_or(Ok(())),
                                Err(error) => Err(error),
                            },
                        );
                    }
                    results
                }
            };
            drop(items);
            for (submission, result) in group.drain(..).zip(results) {
                let _ = submission.reply.send((submission.batch, result));
            }
        }
    }

    /// Writes the batches of several shards in ONE transaction. Each shard's
    /// fence is raised to its epoch first; a shard whose fence a higher epoch
    /// holds is refused with [`LogError::Fenced`] and nothing of its batch is
    /// written, while the others' land. `Err` when the transaction failed as
    /// a whole (nothing landed).
    async fn write_group(
        &self,
        items: &[(u32, u64, &Batch)],
        writer: &mut Writer,
    ) -> Result<Vec<Result<(), LogError>>, LogError> {
        let written = self.write_group_with(items, writer).await;
        if written.is_err() {
            // The connection may be what failed: take a fresh one next time.
            writer.release();
        }
        written
    }

    async fn write_group_with(
        &self,
        items: &[(u32, u64, &Batch)],
        writer: &mut Writer,
    ) -> Result<Vec<Result<(), LogError>>, LogError> {
        // Per shard, the highest epoch asked for (a shard has one batch in a
        // group unless a term changed hands on this node meanwhile).
        let mut fences: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for (shard, epoch, _) in items {
            let highest = fences.entry(*shard).or_insert(*epoch);
            *highest = (*highest).max(*epoch);
        }
        let fence_rows = fences
            .iter()
            .map(|(shard, epoch)| Ok((i64::from(*shard), to_i64(*epoch, "epoch")?)))
            .collect::<Result<Vec<(i64, i64)>, LogError>>()?;
        // SQLite: writers take turns (the outbox relay too) instead of
        // colliding on the database lock and sleeping in its busy handler
        // (measured: most of the time of a many-auction load went there).
        let _turn = self.database.write_turn().await;
        // One statement for the whole group first, where the backend has one
        // (PostgreSQL), when each shard has one batch in the group.
        let mut together =
            matches!(self.database, Database::Postgres(_)) && fences.len() == items.len();
        on_pool!(&self.database, pool => loop {
            let mut transaction = pool.begin_write(writer).await?;
            let mut results = Vec::with_capacity(items.len());
            let mut accepted: Vec<(i64, i64, &Batch)> = Vec::with_capacity(items.len());
            let mut heads = None;
            let written = if together {
                let all = items
                    .iter()
                    .map(|(shard, epoch, batch)| Ok((i64::from(*shard), to_i64(*epoch, "epoch")?, *batch)))
                    .collect::<Result<Vec<_>, LogError>>()?;
                let parts = GroupParts::gather(&all)?;
                match transaction.write_together(&fence_rows, &parts).await {
                    Ok(Some(written)) if written.raised.len() == fence_rows.len() => {
                        results.extend(items.iter().map(|_| Ok(())));
                        heads = Some(written.heads);
                        Some((all, parts))
                    }
                    Ok(None) => None,
                    // A fence a higher epoch holds, or a row the database
                    // refused: the statements one by one say whose batch.
                    Ok(Some(_)) | Err(sqlx::Error::Database(_)) => {
                        transaction.rollback().await?;
                        together = false;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            } else {
                None
            };
            let parts = match written {
                Some((all, parts)) => {
                    accepted = all;
                    parts
                }
                None => {
                    // Fences first: they also serialise two would-be leaders
                    // on the rows. The upsert's WHERE skips a lower epoch,
                    // RETURNING says which were raised; sorted by shard, so
                    // two nodes' groups lock the rows in the same order.
                    let raised: HashSet<i64> = transaction
                        .raise_fences(&fence_rows)
                        .await?
                        .into_iter()
                        .collect();
                    for (shard, epoch, batch) in items {
                        let highest = fences.get(shard).copied().unwrap_or(*epoch);
                        let shard_value = i64::from(*shard);
                        if raised.contains(&shard_value) && *epoch == highest {
                            accepted.push((shard_value, to_i64(*epoch, "epoch")?, batch));
                            results.push(Ok(()));
                            continue;
                        }
                        let current: i64 = QueryBuilder::new("SELECT epoch FROM shard_epochs WHERE shard = ")
                            .push_bind(shard_value)
                            .build_query_scalar()
                            .fetch_one(&mut *transaction)
                            .await?;
                        let current = if raised.contains(&shard_value) {
                            highest
                        } else {
                            to_u64(current, "epoch")?
                        };
                        results.push(Err(LogError::Fenced { shard: *shard, epoch: *epoch, current }));
                    }
                    if accepted.is_empty() {
                        transaction.rollback().await?;
                        return Ok(results);
                    }
                    let parts = GroupParts::gather(&accepted)?;
                    transaction.insert_auctions(&parts.auctions).await?;
                    transaction.insert_events(&parts.events).await?;
                    transaction.upsert_snapshots(&parts.snapshots).await?;
                    transaction.insert_outcomes(&parts.outcomes).await?;
                    // In the fenced transaction: a deposed leader's events never leave.
                    auction_platform::bus::outbox::stage(&mut transaction, &parts.outbox).await?;
                    parts
                }
            };
            // After the new auctions' INSERT: these update their rows.
            for change in accepted.iter().flat_map(|(_, _, batch)| &batch.status_changes) {
                QueryBuilder::new("UPDATE auctions SET status = ")
                    .push_bind(change.status)
                    .push(", finished = ")
                    .push_bind(change.finished)
                    .push(" WHERE auction_id = ")
                    .push_bind(change.auction_id)
                    .build()
                    .execute(&mut *transaction)
                    .await?;
            }
            let list_orders: Vec<&ListOrderChange> = accepted
                .iter()
                .flat_map(|(_, _, batch)| &batch.list_orders)
                .collect();
            transaction.update_list_orders(&list_orders).await?;
            for update in accepted.iter().flat_map(|(_, _, batch)| &batch.spec_updates) {
                QueryBuilder::new("UPDATE auctions SET spec = ")
                    .push_bind(&update.spec)
                    .push(", metadata = ")
                    .push_bind(&update.metadata)
                    .push(" WHERE auction_id = ")
                    .push_bind(update.auction_id)
                    .build()
                    .execute(&mut *transaction)
                    .await?;
            }
            // Only the one statement returns heads.
            let in_one_statement = heads.is_some();
            // Users' activity heads are the only rows that groups of
            // different nodes share; they stay locked from their upsert to
            // the commit. Statement by statement they are the last rows
            // taken; in the one statement (PostgreSQL) they are taken with
            // the fences, before the rest, and held through the updates
            // below: a little longer, traded for six fewer round trips.
            if !parts.activity.is_empty() {
                // The per-user index, in this same transaction: a few
                // multi-row statements per group, never one per bid. First
                // reserve each user's sequence numbers (sorted: every group
                // locks head rows in the same order, so two nodes cannot
                // deadlock), then append the rows, then move the positions.
                // (Tried: four committers side by side on PostgreSQL. They
                // queued on these head rows, every group sharing some
                // bidders, and were no faster than one. Tried again as a
                // second committer for timer batches only, so closes would
                // not wait behind bids: a close's WON/LOST rows belong to
                // the same bidders, the two transactions queued on these
                // rows, and bids and closes both got slower.)
                let counts = &parts.head_counts;
                let heads = match heads.take() {
                    Some(heads) => heads,
                    None => transaction.reserve_activity(counts).await?,
                };
                let mut next_seq: HashMap<Uuid, i64> = HashMap::with_capacity(heads.len());
                for (user_id, last) in heads {
                    let count = counts
                        .binary_search_by_key(&user_id, |(user, _)| *user)
                        .ok()
                        .and_then(|index| counts.get(index))
                        .map_or(0, |(_, count)| *count);
                    next_seq.insert(user_id, last - count + 1);
                }
                let mut numbered = Vec::with_capacity(parts.activity.len());
                let mut sequenced = Vec::with_capacity(parts.activity.len());
                for row in &parts.activity {
                    let Some(activity_type) = row.activity_type else {
                        sequenced.push((None, *row));
                        continue;
                    };
                    let Some(seq) = next_seq.get_mut(&row.user_id) else {
                        return Err(LogError::Corrupt(format!("no sequence reserved for user {}", row.user_id)));
                    };
                    numbered.push((*seq, activity_type, *row));
                    sequenced.push((Some(*seq), *row));
                    *seq += 1;
                }
                transaction
                    .insert_activity_and_positions(&numbered, &position_changes(&sequenced))
                    .await?;
            }
            transaction.commit().await?;
            let counter = if in_one_statement { &self.written.together } else { &self.written.stepwise };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(results);
        })
    }

    /// The stored outcomes among `keys` (caller, method, request id).
    pub async fn find_outcomes(
        &self,
        keys: &[(Uuid, &str, &str)],
    ) -> Result<Vec<OutcomeRow>, LogError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        const COLUMNS: &str = "SELECT caller, method, request_id, auction_id, fingerprint, outcome, at_ms FROM request_outcomes WHERE ";
        let mut found = Vec::new();
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let rows = match &self.database {
                // One statement text for any number of keys: prepared once.
                Database::Postgres(pool) => {
                    let callers: Vec<Uuid> = chunk.iter().map(|(caller, _, _)| *caller).collect();
                    let methods: Vec<&str> = chunk.iter().map(|(_, method, _)| *method).collect();
                    let request_ids: Vec<&str> = chunk.iter().map(|(_, _, id)| *id).collect();
                    sqlx::query(&format!(
                        "{COLUMNS}(caller, method, request_id) IN \
                         (SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[]))"
                    ))
                    .bind(callers)
                    .bind(methods)
                    .bind(request_ids)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(outcome_row)
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
                }
                Database::Sqlite(pool) => {
                    let mut query = QueryBuilder::new(COLUMNS);
                    for (index, (caller, method, request_id)) in chunk.iter().enumerate() {
                        if index > 0 {
                            query.push(" OR ");
                        }
                        query
                            .push("(caller = ")
                            .push_bind(*caller)
                            .push(" AND method = ")
                            .push_bind(*method)
                            .push(" AND request_id = ")
                            .push_bind(*request_id)
                            .push(")");
                    }
                    query
                        .build()
                        .fetch_all(pool)
                        .await?
                        .iter()
                        .map(outcome_row)
                        .collect::<Result<Vec<_>, sqlx::Error>>()?
                }
            };
            found.extend(rows);
        }
        Ok(found)
    }

    /// The ids of the shard's auctions that are not finished.
    pub async fn live_auction_ids(&self, shard: u32) -> Result<Vec<Uuid>, LogError> {
        let ids = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT auction_id FROM auctions WHERE shard = ")
                .push_bind(i64::from(shard))
                .push(" AND finished = ")
                .push_bind(false)
                .push(" ORDER BY auction_id")
                .build_query_scalar::<Uuid>()
                .fetch_all(pool)
                .await?
        });
        Ok(ids)
    }

    /// One auction as stored (spec, metadata, latest snapshot, later events),
    /// or `None` when it does not exist.
    pub async fn load_auction(&self, auction_id: Uuid) -> Result<Option<StoredAuction>, LogError> {
        on_pool!(&self.database, pool => {
            let Some(row) = QueryBuilder::new("SELECT spec, metadata FROM auctions WHERE auction_id = ")
                .push_bind(auction_id)
                .build()
                .fetch_optional(pool)
                .await?
            else {
                return Ok(None);
            };
            let spec: String = row.try_get("spec")?;
            let metadata: String = row.try_get("metadata")?;
            let snapshot = QueryBuilder::new("SELECT seq, state FROM auction_snapshots WHERE auction_id = ")
                .push_bind(auction_id)
                .build()
                .fetch_optional(pool)
                .await?
                .map(|row| -> Result<(u64, String), LogError> {
                    Ok((to_u64(row.try_get("seq")?, "seq")?, row.try_get("state")?))
                })
                .transpose()?;
            // Engine sequences start at 0: without a snapshot, every event.
            let from = snapshot.as_ref().map_or(0, |(seq, _)| *seq + 1);
            let events: Vec<String> = QueryBuilder::new("SELECT event FROM auction_events WHERE auction_id = ")
                .push_bind(auction_id)
                .push(" AND seq >= ")
                .push_bind(to_i64(from, "seq")?)
                .push(" ORDER BY seq")
                .build_query_scalar()
                .fetch_all(pool)
                .await?;
            Ok(Some(StoredAuction { auction_id, spec, metadata, snapshot, events }))
        })
    }

    /// Up to `limit` events of an auction from engine sequence `from_seq`
    /// on, in order: (seq, event JSON).
    pub async fn events_from(
        &self,
        auction_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, LogError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT seq, event FROM auction_events WHERE auction_id = ")
                .push_bind(auction_id)
                .push(" AND seq >= ")
                .push_bind(to_i64(from_seq, "seq")?)
                .push(" ORDER BY seq LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.try_get::<i64, _>("seq")?, row.try_get::<String, _>("event")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(seq, event)| Ok((to_u64(seq, "seq")?, event)))
            .collect()
    }

    /// Auction ids in id order after `after` (for paging), optionally only
    /// those not finished.
    pub async fn list_auction_ids(
        &self,
        after: Option<Uuid>,
        only_live: bool,
        limit: u32,
    ) -> Result<Vec<Uuid>, LogError> {
        let ids = on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("SELECT auction_id FROM auctions WHERE 1 = 1");
            if let Some(after) = after {
                query.push(" AND auction_id > ").push_bind(after);
            }
            if only_live {
                query.push(" AND finished = ").push_bind(false);
            }
            query
                .push(" ORDER BY auction_id LIMIT ")
                .push_bind(i64::from(limit))
                .build_query_scalar::<Uuid>()
                .fetch_all(pool)
                .await?
        });
        Ok(ids)
    }

    /// Up to `limit` auctions in [`ListOrder`] (then id) after `after`,
    /// optionally only those not finished.
    pub async fn list_auctions(
        &self,
        after: Option<(ListOrder, Uuid)>,
        only_live: bool,
        limit: u32,
    ) -> Result<Vec<ListedAuction>, LogError> {
        let rows = on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new(
                "SELECT auction_id, list_end_ms, list_lot_number, metadata FROM auctions WHERE 1 = 1",
            );
            if let Some((order, auction_id)) = after {
                query
                    .push(" AND (list_end_ms, list_lot_number, auction_id) > (")
                    .push_bind(order.end_ms)
                    .push(", ")
                    .push_bind(order.lot_number)
                    .push(", ")
                    .push_bind(auction_id)
                    .push(")");
            }
            if only_live {
                query.push(" AND finished = ").push_bind(false);
            }
            query
                .push(" ORDER BY list_end_ms, list_lot_number, auction_id LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(ListedAuction {
                        auction_id: row.try_get("auction_id")?,
                        order: ListOrder {
                            end_ms: row.try_get("list_end_ms")?,
                            lot_number: row.try_get("list_lot_number")?,
                        },
                        metadata: row.try_get("metadata")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// Begins a term: raises the shard's fence to `epoch` (refused with
    /// [`LogError::Fenced`] when a higher epoch holds it) and records which
    /// node leads under it. A new leader calls this *before* it reads the
    /// log, so nothing a deposed leader might still try to append can land
    /// after that read.
    pub async fn begin_term(
        &self,
        shard: u32,
        epoch: u64,
        node: &str,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let epoch_value = to_i64(epoch, "epoch")?;
        let shard_value = i64::from(shard);
        let _turn = self.database.write_turn().await;
        on_pool!(&self.database, pool => {
            let mut transaction = pool.begin().await?;
            raise_fence!(transaction, shard, shard_value, epoch, epoch_value);
            let inserted = QueryBuilder::new("INSERT INTO shard_terms (shard, epoch, node, started_at_ms) VALUES (")
                .push_bind(shard_value)
                .push(", ")
                .push_bind(epoch_value)
                .push(", ")
                .push_bind(node)
                .push(", ")
                .push_bind(now_ms)
                .push(") ON CONFLICT (shard, epoch) DO NOTHING")
                .build()
                .execute(&mut *transaction)
                .await?
                .rows_affected();
            if inserted == 0 {
                let claimed: String = QueryBuilder::new("SELECT node FROM shard_terms WHERE shard = ")
                    .push_bind(shard_value)
                    .push(" AND epoch = ")
                    .push_bind(epoch_value)
                    .build_query_scalar()
                    .fetch_one(&mut *transaction)
                    .await?;
                transaction.rollback().await?;
                return Err(LogError::EpochClaimed { shard, epoch, node: claimed });
            }
            transaction.commit().await?;
        });
        Ok(())
    }

    /// Deletes up to `limit` request outcomes recorded before `before_ms`
    /// (past the retention of request ids); returns how many.
    pub async fn prune_outcomes(&self, before_ms: i64, limit: i64) -> Result<u64, LogError> {
        let deleted = on_pool!(&self.database, pool => {
            QueryBuilder::new("DELETE FROM request_outcomes WHERE (caller, method, request_id) IN (SELECT caller, method, request_id FROM request_outcomes WHERE at_ms < ")
                .push_bind(before_ms)
                .push(" LIMIT ")
                .push_bind(limit)
                .push(")")
                .build()
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }

    /// Deletes up to `limit` activity events from before `before_ms`,
    /// keeping each user's last `keep` events whatever their age; returns
    /// how many.
    pub async fn prune_activity(
        &self,
        before_ms: i64,
        keep: i64,
        limit: i64,
    ) -> Result<u64, LogError> {
        let deleted = on_pool!(&self.database, pool => {
            // Only users with more than `keep` events have anything to
            // delete: the others' rows are never scanned.
            QueryBuilder::new("DELETE FROM user_activity WHERE (user_id, seq) IN (SELECT a.user_id, a.seq FROM user_activity_heads h JOIN user_activity a ON a.user_id = h.user_id WHERE h.last_seq > ")
                .push_bind(keep)
                .push(" AND a.at_ms < ")
                .push_bind(before_ms)
                .push(" AND a.seq <= h.last_seq - ")
                .push_bind(keep)
                .push(" LIMIT ")
                .push_bind(limit)
                .push(")")
                .build()
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }

    /// The last per-user sequence of `user_id`'s activity log (0 when empty).
    pub async fn activity_head(&self, user_id: Uuid) -> Result<u64, LogError> {
        let head: Option<i64> = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT last_seq FROM user_activity_heads WHERE user_id = ")
                .push_bind(user_id)
                .build_query_scalar()
                .fetch_optional(pool)
                .await?
        });
        head.map_or(Ok(0), |head| to_u64(head, "last_seq"))
    }

    /// Up to `limit` events of `user_id`'s activity log after `after`, in
    /// order.
    pub async fn activity_after(
        &self,
        user_id: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredActivity>, LogError> {
        let rows = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT seq, auction_id, activity_type, bid_id, at_ms, state, viewer FROM user_activity WHERE user_id = ")
                .push_bind(user_id)
                .push(" AND seq > ")
                .push_bind(to_i64(after, "seq")?)
                .push(" ORDER BY seq LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok((
                        row.try_get::<i64, _>("seq")?,
                        StoredActivity {
                            seq: 0,
                            auction_id: row.try_get("auction_id")?,
                            activity_type: row.try_get("activity_type")?,
                            bid_id: row.try_get("bid_id")?,
                            at_ms: row.try_get("at_ms")?,
                            state: row.try_get("state")?,
                            viewer: row.try_get("viewer")?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(seq, activity)| {
                Ok(StoredActivity {
                    seq: to_u64(seq, "seq")?,
                    ..activity
                })
            })
            .collect()
    }

    /// `user_id`'s positions, most recent own bid first, after the cursor
    /// (the last bid sequence) of the previous page; with
    /// `live_or_since_ms`, only those not ended or updated since then.
    pub async fn positions(
        &self,
        user_id: Uuid,
        after: Option<i64>,
        live_or_since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredPosition>, LogError> {
        let rows = on_pool!(&self.database, pool => {
            let mut query = QueryBuilder::new("SELECT auction_id, last_bid_seq, removed_status FROM user_positions WHERE user_id = ");
            query.push_bind(user_id).push(" AND last_bid_seq IS NOT NULL");
            if let Some(seq) = after {
                query.push(" AND last_bid_seq < ").push_bind(seq);
            }
            if let Some(since_ms) = live_or_since_ms {
                query
                    .push(" AND (ended = ")
                    .push_bind(false)
                    .push(" OR updated_at_ms >= ")
                    .push_bind(since_ms)
                    .push(")");
            }
            query
                .push(" ORDER BY last_bid_seq DESC LIMIT ")
                .push_bind(i64::from(limit))
                .build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(StoredPosition {
                        auction_id: row.try_get("auction_id")?,
                        last_bid_seq: row.try_get("last_bid_seq")?,
                        removed_status: row.try_get("removed_status")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// The highest epoch that has appended to `shard` (0 when none has).
    pub async fn current_epoch(&self, shard: u32) -> Result<u64, LogError> {
        let epoch: Option<i64> = on_pool!(&self.database, pool => {
            QueryBuilder::new("SELECT epoch FROM shard_epochs WHERE shard = ")
                .push_bind(i64::from(shard))
                .build_query_scalar()
                .fetch_optional(pool)
                .await?
        });
        epoch.map_or(Ok(0), |epoch| to_u64(epoch, "epoch"))
    }
}
