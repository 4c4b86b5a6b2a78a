//! The event bus on Redis Streams.
//!
//! - A topic is the stream `<prefix>:<topic>`; each entry has one field,
//!   `e`, holding the encoded `auction.v1.EventEnvelope`. Publishing is one
//!   pipeline of `XADD ... MAXLEN ~ <stream_max_length>`.
//! - A subscription joins the consumer group on each topic (created at `0`
//!   with `MKSTREAM`, so a group made after events were published, or made
//!   again after Redis lost its data, still sees every retained entry).
//! - Each topic's consumer task: first re-reads its own pending entries
//!   (delivered to this consumer name before a restart, never acknowledged),
//!   then loops: `XAUTOCLAIM` entries idle longer than `claim_idle_ms` (a
//!   dead consumer's, or ones whose handler failed), then `XREADGROUP ...
//!   BLOCK` for new ones, handed to the handler together
//!   (`Handler::handle_batch`). An entry is `XACK`ed only after its handler
//!   returned `Ok` for it. An entry delivered `max_deliveries` times or more is
//!   copied to `<prefix>:<topic>:dead` (with its id, group and delivery
//!   count) and acknowledged instead of handled again.
//! - Redis errors (a restart, a network cut) are logged once per outage and
//!   retried with a capped back-off; the connection manager reconnects.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};

use super::{BoxFuture, BusError, Envelope, EventBus, Handler, Subscription};
use crate::config::RedisConfig;

/// Entries read per call.
const READ_COUNT: usize = super::MAX_BATCH;
/// How long one blocking read waits for new entries.
const BLOCK_MS: u64 = 1_000;
/// The field of an entry that holds the envelope.
const FIELD: &str = "e";
/// Longest pause between retries while Redis is unreachable.
const MAX_BACKOFF_MS: u64 = 2_000;

/// The Redis Streams bus.
#[derive(Clone)]
pub struct RedisStreamsBus {
    client: redis::Client,
    /// Shared by publishers (multiplexed).
    publisher: ConnectionManager,
    prefix: String,
    consumer: String,
    claim_idle_ms: u64,
    max_deliveries: u32,
    max_length: u64,
}

impl std::fmt::Debug for RedisStreamsBus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisStreamsBus")
            .field("prefix", &self.prefix)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(MAX_BACKOFF_MS))
}

impl RedisStreamsBus {
    /// A bus over `config.url` (which must be set); connects lazily, so a
    /// Redis that is down at start only delays events.
    pub fn new(config: &RedisConfig) -> Result<Self, BusError> {
        let url = config.url.as_deref().ok_or_else(|| {
            BusError::Malformed("redis.url is required for the Redis bus".to_owned())
        })?;
        let client = redis::Client::open(url)?;
        let publisher = ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(Duration::from_secs(2)),
        )?;
        let consumer = config
            .consumer_name
            .clone()
            .unwrap_or_else(default_consumer_name);
        Ok(Self {
            client,
            publisher,
            prefix: config.stream_prefix.clone(),
            consumer,
            claim_idle_ms: config.claim_idle_ms,
            max_deliveries: config.max_deliveries,
            max_length: config.stream_max_length,
        })
    }

    /// The stream key of `topic`.
    pub fn stream_key(&self, topic: &str) -> String {
        format!("{}:{topic}", self.prefix)
    }

    /// The dead-letter stream key of `topic`.
    pub fn dead_letter_key(&self, topic: &str) -> String {
        format!("{}:{topic}:dead", self.prefix)
    }

    /// The envelopes in `topic`'s dead-letter stream, oldest first.
    pub async fn dead_letters(&self, topic: &str) -> Result<Vec<Envelope>, BusError> {
        let mut connection = self.publisher.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.dead_letter_key(topic))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await?;
        entries(&reply)
            .into_iter()
            .map(|(_, envelope)| Envelope::from_bytes(&envelope))
            .collect()
    }
}

fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "node" } else { &host },
        std::process::id()
    )
}

impl EventBus for RedisStreamsBus {
    fn publish<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            if envelopes.is_empty() {
                return Ok(());
            }
            let mut pipeline = redis::pipe();
            for envelope in envelopes {
                pipeline
                    .cmd("XADD")
                    .arg(self.stream_key(&envelope.topic))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_length)
                    .arg("*")
                    .arg(FIELD)
                    .arg(envelope.to_bytes())
                    .ignore();
            }
            let mut connection = self.publisher.clone();
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
    }

    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        subscription
            .topics
            .iter()
            .map(|topic| {
                let consumer = TopicConsumer {
                    bus: self.clone(),
                    topic: topic.clone(),
                    stream: self.stream_key(topic),
                    group: subscription.group.clone(),
                    handler: Arc::clone(&handler),
                };
                let shutdown = subscription.shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = consumer.run() => {}
                        () = shutdown.wait() => {}
                    }
                })
            })
            .collect()
    }
}

/// One topic's consumer task.
struct TopicConsumer {
    bus: RedisStreamsBus,
    topic: String,
    stream: String,
    group: String,
    handler: Arc<dyn Handler>,
}

/// One entry read from a stream.
struct Entry {
    id: String,
    envelope: Vec<u8>,
}

impl TopicConsumer {
    async fn run(self) {
        // Blocking reads get their own connection, so they never hold up
        // publishers sharing the multiplexed one.
        let connection = ConnectionManager::new_lazy_with_config(
            self.bus.client.clone(),
            manager_config(Duration::from_millis(BLOCK_MS + 2_000)),
        );
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                tracing::error!(%error, topic = %self.topic, "bus consumer cannot be created");
                return;
            }
        };
        let mut backoff_ms = 50;
        let mut failing = false;
        let mut group_ready = false;
        // Where the re-read of this consumer's own pending entries is;
        // `None` once it is done.
        let mut own_pending = Some("0".to_owned());
        let mut claim_cursor = "0-0".to_owned();
        let mut next_claim = tokio::time::Instant::now();
        loop {
            let round = self
                .round(
                    &mut connection,
                    &mut group_ready,
                    &mut own_pending,
                    &mut claim_cursor,
                    &mut next_claim,
                )
                .await;
            match round {
                Ok(()) => {
                    if failing {
                        tracing::info!(topic = %self.topic, group = %self.group, "bus consumer: redis reachable again");
                        failing = false;
                    }
                    backoff_ms = 50;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, topic = %self.topic, group = %self.group, "bus consumer: redis failed; retrying");
                        failing = true;
                    }
                    if is_no_group(&error) {
                        group_ready = false;
                    }
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(MAX_BACKOFF_MS);
                }
            }
        }
    }

    async fn round(
        &self,
        connection: &mut ConnectionManager,
        group_ready: &mut bool,
        own_pending: &mut Option<String>,
        claim_cursor: &mut String,
        next_claim: &mut tokio::time::Instant,
    ) -> Result<(), RedisError> {
        if !*group_ready {
            let created: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(connection)
                .await;
            match created {
                Ok(_) => {}
                Err(error) if error.code() == Some("BUSYGROUP") => {}
                Err(error) => return Err(error),
            }
            *group_ready = true;
        }
        if let Some(after) = own_pending.clone() {
            // Entries delivered to this consumer name before a restart, read
            // once, page by page; later failures are left to XAUTOCLAIM.
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.bus.consumer)
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&after)
                .query_async(connection)
                .await?;
            let pending = stream_entries(&reply);
            *own_pending = if pending.len() < READ_COUNT {
                None
            } else {
                pending.last().map(|entry| entry.id.clone())
            };
            for entry in pending {
                self.deliver_checked(connection, entry).await?;
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= *next_claim {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.bus.consumer)
                .arg(self.bus.claim_idle_ms)
                .arg(claim_cursor.as_str())
                .arg("COUNT")
                .arg(READ_COUNT)
                .query_async(connection)
                .await?;
            let (cursor, claimed) = autoclaim_reply(&reply);
            *claim_cursor = cursor;
            let claimed_any = !claimed.is_empty();
            for entry in claimed {
                self.deliver_checked(connection, entry).await?;
            }
            if !claimed_any && claim_cursor == "0-0" {
                // A full pass found nothing idle: look again a bit later.
                *next_claim = tokio::time::Instant::now()
                    + Duration::from_millis((self.bus.claim_idle_ms / 2).clamp(50, 5_000));
            }
            if claimed_any {
                return Ok(());
            }
        }
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.bus.consumer)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(connection)
            .await?;
        // First delivery: no need to ask for the count.
        self.deliver_batch(connection, stream_entries(&reply)).await
    }

    /// Hands new entries to the handler together and acknowledges the
    /// handled ones in one `XACK`.
    async fn deliver_batch(
        &self,
        connection: &mut ConnectionManager,
        entries: Vec<Entry>,
    ) -> Result<(), RedisError> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut envelopes = Vec::with_capacity(entries.len());
        for entry in entries {
            match Envelope::from_bytes(&entry.envelope) {
                Ok(envelope) => {
                    ids.push(entry.id);
                    envelopes.push(envelope);
                }
                // Never decodable: leave it pending; it dead-letters after
                // `max_deliveries` claims.
                Err(error) => {
                    tracing::error!(%error, id = %entry.id, topic = %self.topic, "bus: undecodable entry");
                }
            }
        }
        if envelopes.is_empty() {
            return Ok(());
        }
        let results = self.handler.handle_batch(&envelopes).await;
        let mut handled = Vec::with_capacity(ids.len());
        for ((id, envelope), result) in ids.into_iter().zip(&envelopes).zip(results) {
            match result {
                Ok(()) => handled.push(id),
                // Not acknowledged: reclaimed after `claim_idle_ms`.
                Err(error) => {
                    tracing::warn!(%error, event_id = %envelope.event_id, topic = %self.topic, group = %self.group, "bus: handler failed; the message will be delivered again");
                }
            }
        }
        if handled.is_empty() {
            return Ok(());
        }
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(handled)
            .query_async::<()>(connection)
            .await
    }

    /// Delivers a redelivered entry unless it has been delivered too often,
    /// in which case it goes to the dead-letter stream.
    async fn deliver_checked(
        &self,
        connection: &mut ConnectionManager,
        entry: Entry,
    ) -> Result<(), RedisError> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&entry.id)
            .arg(&entry.id)
            .arg(1)
            .query_async(connection)
            .await?;
        let deliveries = pending_delivery_count(&reply).unwrap_or(1);
        // The count includes the delivery in hand; it exceeds the maximum
        // only when `max_deliveries` earlier attempts went unacknowledged.
        if deliveries > u64::from(self.bus.max_deliveries) {
            tracing::error!(topic = %self.topic, group = %self.group, id = %entry.id, deliveries, "bus: message dead-lettered");
            redis::pipe()
                .atomic()
                .cmd("XADD")
                .arg(self.bus.dead_letter_key(&self.topic))
                .arg("*")
                .arg(FIELD)
                .arg(&entry.envelope)
                .arg("id")
                .arg(&entry.id)
                .arg("group")
                .arg(&self.group)
                .arg("deliveries")
                .arg(deliveries)
                .ignore()
                .cmd("XACK")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&entry.id)
                .ignore()
                .query_async::<()>(connection)
                .await?;
            return Ok(());
        }
        self.deliver(connection, entry).await
    }

    async fn deliver(
        &self,
        connection: &mut ConnectionManager,
        entry: Entry,
    ) -> Result<(), RedisError> {
        let envelope = match Envelope::from_bytes(&entry.envelope) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Never decodable: leave it pending; it dead-letters after
                // `max_deliveries` claims.
                tracing::error!(%error, id = %entry.id, topic = %self.topic, "bus: undecodable entry");
                return Ok(());
            }
        };
        match self.handler.handle(&envelope).await {
            Ok(()) => {
                redis::cmd("XACK")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&entry.id)
                    .query_async::<()>(connection)
                    .await
            }
            Err(error) => {
                // Not acknowledged: reclaimed after `claim_idle_ms`.
                tracing::warn!(%error, event_id = %envelope.event_id, topic = %self.topic, group = %self.group, "bus: handler failed; the message will be delivered again");
                Ok(())
            }
        }
    }
}

fn is_no_group(error: &RedisError) -> bool {
    error.code() == Some("NOGROUP")
}

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.as_bytes().to_vec()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

fn text_of(value: &Value) -> Option<String> {
    bytes_of(value).and_then(|bytes| String::from_utf8(bytes).ok())
}

fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(key, value)| [key, value]).collect(),
        _ => Vec::new(),
    }
}

/// `[[id, [field, value, ...]], ...]` as (id, envelope bytes) pairs,
/// skipping entries without our field (deleted ones come back as nil).
fn entries(value: &Value) -> Vec<(String, Vec<u8>)> {
    items(value)
        .into_iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text_of(parts.first()?)?;
            let fields = items(parts.get(1)?);
            let envelope = fields
                .chunks(2)
                .find(|pair| pair.first().and_then(|name| text_of(name)).as_deref() == Some(FIELD))
                .and_then(|pair| pair.get(1).and_then(|value| bytes_of(value)))?;
            Some((id, envelope))
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply (one stream): `[[stream, entries]]`
/// in RESP2, `{stream: entries}` in RESP3, nil when nothing arrived.
fn stream_entries(value: &Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match value {
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .iter()
            .filter_map(|stream| items(stream).get(1).copied())
            .collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .flat_map(entries)
        .map(|(id, envelope)| Entry { id, envelope })
        .collect()
}

/// `XAUTOCLAIM`'s `[next cursor, entries, deleted ids]`.
fn autoclaim_reply(value: &Value) -> (String, Vec<Entry>) {
    let parts = items(value);
    let cursor = parts
        .first()
        .and_then(|cursor| text_of(cursor))
        .unwrap_or_else(|| "0-0".to_owned());
    let claimed = parts
        .get(1)
        .map(|claimed| {
            entries(claimed)
                .into_iter()
                .map(|(id, envelope)| Entry { id, envelope })
                .collect()
        })
        .unwrap_or_default();
    (cursor, claimed)
}

/// The delivery count in `XPENDING key group id id 1`'s
/// `[[id, consumer, idle, count]]`.
fn pending_delivery_count(value: &Value) -> Option<u64> {
    let first = *items(value).first()?;
    match items(first).get(3)? {
        Value::Int(count) => u64::try_from(*count).ok(),
        other => text_of(other)?.parse().ok(),
    }
}
