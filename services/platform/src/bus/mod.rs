//! The event bus between services (`proto/auction/v1/events.proto`).
//!
//! - [`EventBus`]: publish [`Envelope`]s to topics, and subscribe a
//!   [`Handler`] to topics as a member of a consumer group. Delivery is at
//!   least once: a message is acknowledged only after its handler returned
//!   `Ok`, so handlers must be idempotent by [`Envelope::event_id`].
//! - [`redis::RedisStreamsBus`]: one Redis stream per topic, consumer groups,
//!   `XACK` after handling, `XAUTOCLAIM` of messages idle past
//!   `redis.claim_idle_ms` (their consumer died or keeps failing), and a
//!   dead-letter stream after `redis.max_deliveries` deliveries.
//! - [`in_process::InProcessBus`]: the same contract inside one process, for
//!   the embedded default (`auctiond dev`) and unit tests.
//! - [`outbox`]: how a service publishes without losing events: it stages
//!   envelopes in its own `event_outbox` table inside the transaction of its
//!   state change, and a [`outbox::Relay`] publishes committed rows in order
//!   and marks them sent. A Redis outage delays events; it loses none.
//! - [`for_process`]: the one bus of a process (shared by every service
//!   mounted in it), chosen by configuration: Redis when `redis.url` is set,
//!   else in-process.

pub mod in_process;
pub mod outbox;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use auction_proto::v1::EventEnvelope;
use prost::Message;
use uuid::Uuid;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// Topic of `auction.v1.BusAuctionEvent` (producer: bidding).
pub const TOPIC_AUCTION: &str = "auction";
/// Topic of `auction.v1.BusOrderEvent` (producer: payment).
pub const TOPIC_ORDER: &str = "order";
/// Topic of `auction.v1.BusCatalogEvent` (producer: catalog).
pub const TOPIC_CATALOG: &str = "catalog";
/// Topic of `auction.v1.BusUserEvent` (producer: user).
pub const TOPIC_USER: &str = "user";

/// A message that travels as an envelope's payload.
pub trait Payload: Message + Default {
    /// Its fully qualified protobuf name, the envelope's `payload_type`.
    const TYPE_NAME: &'static str;
}

macro_rules! payloads {
    ($($message:ident),*) => {
        $(impl Payload for auction_proto::v1::$message {
            const TYPE_NAME: &'static str = concat!("auction.v1.", stringify!($message));
        })*
    };
}

payloads!(
    BusAuctionEvent,
    BusOrderEvent,
    BusCatalogEvent,
    BusUserEvent
);

/// A boxed, sendable future: what the object-safe traits below return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One event on the bus: `auction.v1.EventEnvelope` in Rust terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// UUIDv7, the same across redeliveries; consumers deduplicate on it.
    pub event_id: Uuid,
    /// The topic (stream), e.g. [`TOPIC_AUCTION`].
    pub topic: String,
    /// Ordering key (auction id, order id, user id).
    pub key: String,
    /// When the producer's state change happened, ms since the Unix epoch.
    pub occurred_at_ms: i64,
    /// Fully qualified payload message name, e.g. `auction.v1.BusAuctionEvent`.
    pub payload_type: String,
    /// The payload, protobuf-encoded.
    pub payload: Vec<u8>,
    /// The producing service, for logs.
    pub producer: String,
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 around `payload`.
    pub fn new<M: Payload>(
        producer: &str,
        topic: &str,
        key: impl Into<String>,
        occurred_at_ms: i64,
        payload: &M,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            topic: topic.to_owned(),
            key: key.into(),
            occurred_at_ms,
            payload_type: M::TYPE_NAME.to_owned(),
            payload: payload.encode_to_vec(),
            producer: producer.to_owned(),
        }
    }

    /// Decodes the payload as `M`, checking its declared type first.
    pub fn decode<M: Payload>(&self) -> Result<M, BusError> {
        if self.payload_type != M::TYPE_NAME {
            return Err(BusError::Malformed(format!(
                "payload is {}, not {}",
                self.payload_type,
                M::TYPE_NAME
            )));
        }
        M::decode(self.payload.as_slice()).map_err(|error| BusError::Malformed(error.to_string()))
    }

    /// The wire form (`auction.v1.EventEnvelope`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Parses the wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BusError> {
        let proto =
            EventEnvelope::decode(bytes).map_err(|error| BusError::Malformed(error.to_string()))?;
        Self::from_proto(proto)
    }

    /// As the contract's message.
    pub fn to_proto(&self) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id.to_string(),
            topic: self.topic.clone(),
            key: self.key.clone(),
            occur_time: Some(timestamp_from_ms(self.occurred_at_ms)),
            payload_type: self.payload_type.clone(),
            payload: self.payload.clone(),
            producer: self.producer.clone(),
        }
    }

    /// From the contract's message.
    pub fn from_proto(proto: EventEnvelope) -> Result<Self, BusError> {
        let event_id = proto
            .event_id
            .parse()
            .map_err(|_| BusError::Malformed(format!("event id `{}`", proto.event_id)))?;
        Ok(Self {
            event_id,
            topic: proto.topic,
            key: proto.key,
            occurred_at_ms: proto.occur_time.map_or(0, |time| ms_from_timestamp(&time)),
            payload_type: proto.payload_type,
            payload: proto.payload,
            producer: proto.producer,
        })
    }
}

/// Milliseconds since the Unix epoch as a protobuf timestamp.
pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the Unix epoch.
pub fn ms_from_timestamp(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1_000)
        .saturating_add(i64::from(timestamp.nanos) / 1_000_000)
}

/// A bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis refused or could not be reached; retry later.
    #[error("redis")]
    Redis(#[from] ::redis::RedisError),
    /// A message could not be decoded.
    #[error("malformed bus message: {0}")]
    Malformed(String),
    /// The database of an outbox failed.
    #[error("outbox database")]
    Database(#[from] sqlx::Error),
}

/// Why a handler did not handle a message; it will be delivered again (up
/// to the bus's maximum, then dead-lettered).
pub type HandleError = Box<dyn std::error::Error + Send + Sync>;

/// What a consumer does with each message.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. `Ok` acknowledges it; an error leaves it to be
    /// delivered again. Must be idempotent by [`Envelope::event_id`].
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>>;

    /// Handles messages read together (one topic, bus order, at most
    /// [`MAX_BATCH`]); one result per message, in the same order. A message
    /// whose result is an error is delivered again like one that failed in
    /// [`Handler::handle`]. The default handles them one by one; a consumer
    /// that writes a database overrides it to commit a whole batch in one
    /// transaction, so it keeps up with a rush instead of paying one commit
    /// (and one fsync) per event.
    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Vec<Result<(), HandleError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(envelopes.len());
            for envelope in envelopes {
                results.push(self.handle(envelope).await);
            }
            results
        })
    }
}

/// The most messages a consumer hands to [`Handler::handle_batch`] at once.
pub const MAX_BATCH: usize = 100;

/// A consumer that writes a database, as a [`Handler`] through [`Batched`]:
/// the events the bus hands over together are applied in one transaction
/// (one commit, one fsync, per batch instead of per event).
pub trait ApplyEvents: Send + Sync + 'static {
    /// A decoded message.
    type Event: Send + Sync;

    /// Decodes a message; an error fails that message alone.
    fn decode(&self, envelope: &Envelope) -> Result<Self::Event, HandleError>;

    /// Applies the decoded messages of one batch, in order, in ONE
    /// transaction: all of them or (with an error) none.
    fn apply_together<'a>(
        &'a self,
        events: &'a [(&'a Envelope, Self::Event)],
    ) -> BoxFuture<'a, Result<(), HandleError>>;

    /// Applies one message in its own transaction.
    fn apply_alone<'a>(
        &'a self,
        envelope: &'a Envelope,
        event: &'a Self::Event,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

/// The [`Handler`] of an [`ApplyEvents`]: a batch goes through
/// [`ApplyEvents::apply_together`]; if that fails, each of its messages
/// through [`ApplyEvents::apply_alone`], so one bad message cannot hold back
/// the rest of its batch.
pub struct Batched<A>(pub A);

impl<A: ApplyEvents> Handler for Batched<A> {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let event = self.0.decode(envelope)?;
            self.0.apply_alone(envelope, &event).await
        })
    }

    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [Envelope],
    ) -> BoxFuture<'a, Vec<Result<(), HandleError>>> {
        Box::pin(async move {
            let mut undecodable = Vec::with_capacity(envelopes.len());
            let mut batch = Vec::with_capacity(envelopes.len());
            for envelope in envelopes {
                match self.0.decode(envelope) {
                    Ok(event) => {
                        batch.push((envelope, event));
                        undecodable.push(None);
                    }
                    Err(error) => undecodable.push(Some(error)),
                }
            }
            let failed = !batch.is_empty()
                && match self.0.apply_together(&batch).await {
                    Ok(()) => false,
                    Err(error) => {
                        tracing::warn!(%error, messages = batch.len(), "bus: a batch failed; handling its messages one by one");
                        true
                    }
                };
            let mut decoded = batch.iter();
            let mut results = Vec::with_capacity(envelopes.len());
            for error in undecodable {
                results.push(match error {
                    Some(error) => Err(error),
                    None => match decoded.next() {
                        Some((envelope, event)) if failed => {
                            self.0.apply_alone(envelope, event).await
                        }
                        _ => Ok(()),
                    },
                });
            }
            results
        })
    }
}

/// Who consumes what.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The consumer group: each message of a topic goes to one member of
    /// each group (a service's nodes share one group).
    pub group: String,
    /// The topics to read.
    pub topics: Vec<String>,
    /// Ends the consumer tasks.
    pub shutdown: Shutdown,
}

/// Publishes and consumes events.
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes `envelopes` in order (to their topics); `Ok` means the bus
    /// holds them durably (Redis) or in memory (in-process).
    fn publish<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), BusError>>;

    /// Starts consuming `subscription.topics` with `handler` until
    /// `subscription.shutdown`; returns the consumer tasks.
    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Vec<tokio::task::JoinHandle<()>>;

    /// Holds publishing until the returned guard drops: a process mounting
    /// several services takes it first, so every consumer group of the
    /// process has subscribed before a message can count as delivered (the
    /// in-process bus delivers a message once every subscribed group has
    /// handled it). Redis keeps a group's messages whenever it subscribes:
    /// nothing to hold.
    fn hold_deliveries(&self) -> DeliveryHold {
        DeliveryHold::new(|| {})
    }
}

/// See [`EventBus::hold_deliveries`]; releases the hold when dropped.
pub struct DeliveryHold {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl DeliveryHold {
    /// A hold that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for DeliveryHold {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for DeliveryHold {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DeliveryHold")
    }
}

/// Buses already made, per configuration (the `Arc` every service of a
/// process shares), so the services mounted in one process talk through one
/// in-process bus.
static BUSES: Mutex<Vec<ProcessBus>> = Mutex::new(Vec::new());

/// A configuration (held weakly: a process that ends frees its bus) and its bus.
type ProcessBus = (Weak<Config>, Arc<dyn EventBus>);

/// The event bus of the process running with `config`: a Redis Streams bus
/// when `redis.url` is set, else an in-process bus. Every call with the same
/// `Arc<Config>` (every service mounted by one `run_all` or `run_single`)
/// gets the same bus.
pub fn for_process(config: &Arc<Config>) -> Result<Arc<dyn EventBus>, BusError> {
    let mut buses = BUSES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    buses.retain(|(owner, _)| owner.strong_count() > 0);
    if let Some((_, bus)) = buses.iter().find(|(owner, _)| {
        owner
            .upgrade()
            .is_some_and(|owner| Arc::ptr_eq(&owner, config))
    }) {
        return Ok(Arc::clone(bus));
    }
    let bus: Arc<dyn EventBus> = match &config.redis.url {
        Some(_) => Arc::new(redis::RedisStreamsBus::new(&config.redis)?),
        None => Arc::new(in_process::InProcessBus::new(config.redis.max_deliveries)),
    };
    buses.push((Arc::downgrade(config), Arc::clone(&bus)));
    Ok(bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an envelope survives its wire form and that decoding checks the
    // payload type.
    #[test]
    fn envelope_round_trips_and_checks_its_type() {
        let payload = auction_proto::v1::BusAuctionEvent {
            auction_id: "a".to_owned(),
            sequence: 7,
            ..Default::default()
        };
        let envelope = Envelope::new("bidding", TOPIC_AUCTION, "a", 1_700_000_000_123, &payload);
        let back = Envelope::from_bytes(&envelope.to_bytes()).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(
            back.decode::<auction_proto::v1::BusAuctionEvent>().unwrap(),
            payload
        );
        assert!(back.decode::<auction_proto::v1::BusOrderEvent>().is_err());
    }
}
