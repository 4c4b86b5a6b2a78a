//! Live fan-out across nodes (a cluster with Redis): the shard leader
//! publishes each commit of each auction on the Redis pub/sub channel
//! `<redis.stream_prefix>:watch:<etcd.key_prefix>:<auction>`; every node with
//! `WatchAuction` streams of that auction holds one subscription to it (on
//! one pub/sub connection per node) and hands what arrives to its local
//! [`Hub`], whose broadcast channel fans it out to the node's watchers.
//!
//! The same connections carry the per-user wake-ups of `WatchMyActivity`:
//! after each commit the leader publishes the users whose activity log it
//! wrote on `<redis.stream_prefix>:activity:<etcd.key_prefix>` (one channel
//! every node subscribes to), and each other node wakes those users' local
//! streams, which read the new rows from the log. A lost wake-up is caught
//! by the streams' heartbeat-time poll of the log.
//!
//! Pub/sub delivers at most once: a message lost while a connection was
//! down shows up as a gap in sequence, and the watcher's stream fills it from
//! the log before going on (no gap, no duplicate). A watcher follows its
//! auction through Redis whichever node leads it, so a leader change does
//! not break the stream; echoes of this node's own commits are dropped by
//! sequence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auction_engine::{AuctionView, Event};
use auction_platform::Shutdown;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use crate::hub::{Hub, Published};
use crate::shard::Metadata;

/// Commits waiting to be published; beyond it they are dropped (watchers
/// fill the gap from the log).
const OUTGOING_CAPACITY: usize = 65_536;
/// Pause before reconnecting to Redis.
const RECONNECT_AFTER: Duration = Duration::from_millis(250);

/// One commit of one auction, as it travels.
#[derive(Serialize, Deserialize)]
struct Wire {
    auction_id: Uuid,
    events: Vec<Event>,
    view: AuctionView,
    metadata: Metadata,
}

/// The users whose activity log one commit wrote, as it travels.
#[derive(Serialize, Deserialize)]
struct ActivityWire {
    /// The publishing node: its own streams were woken already.
    node: String,
    users: Vec<Uuid>,
}

/// What the publisher sends.
enum Outgoing {
    Commit(Arc<Published>),
    Activity(Vec<Uuid>),
}

enum Subscription {
    Follow(Uuid, oneshot::Sender<()>),
    Unfollow(Uuid),
}

/// This node's side of the cross-node fan-out.
#[derive(Debug)]
pub struct Fanout {
    channel_prefix: String,
    outgoing: mpsc::Sender<Outgoing>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    /// Auctions this node follows, with how many local streams want each.
    followed: Mutex<HashMap<Uuid, usize>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Follow(id, _) => write!(formatter, "Follow({id})"),
            Self::Unfollow(id) => write!(formatter, "Unfollow({id})"),
        }
    }
}

impl Fanout {
    /// Starts the publisher and the subscriber on `redis_url`.
    pub fn start(
        redis_url: &str,
        stream_prefix: &str,
        key_prefix: &str,
        hub: Arc<Hub>,
        node: String,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let channels = Channels {
            commits: format!("{stream_prefix}:watch:{key_prefix}:"),
            activity: format!("{stream_prefix}:activity:{key_prefix}"),
            node,
        };
        let channel_prefix = channels.commits.clone();
        let (outgoing, to_publish) = mpsc::channel(OUTGOING_CAPACITY);
        let (subscriptions, requests) = mpsc::unbounded_channel();
        tokio::spawn(publisher(
            client.clone(),
            channels.clone(),
            to_publish,
            shutdown.clone(),
        ));
        tokio::spawn(subscriber(client, channels, hub, requests, shutdown));
        Ok(Arc::new(Self {
            channel_prefix,
            outgoing,
            subscriptions,
            followed: Mutex::new(HashMap::new()),
        }))
    }

    /// The leader: hands a commit to the publisher (never waits; when the
    /// publisher is far behind the commit is dropped and watchers fill the
    /// gap from the log).
    pub fn publish(&self, published: Arc<Published>) {
        if self.outgoing.try_send(Outgoing::Commit(published)).is_err() {
            tracing::debug!("fan-out publisher behind; a watcher will fill the gap from the log");
        }
    }

    /// The leader: tells the other nodes which users' activity logs a
    /// commit wrote (never waits; a dropped wake-up is caught by the
    /// streams' poll).
    pub fn publish_activity(&self, users: Vec<Uuid>) {
        if !users.is_empty() && self.outgoing.try_send(Outgoing::Activity(users)).is_err() {
            tracing::debug!("fan-out publisher behind; activity streams will poll");
        }
    }

    /// A local stream wants `auction_id`'s commits: subscribes (once per
    /// node) and returns when Redis confirmed the subscription, or after a
    /// second (the stream's gap filling covers a late subscription).
    pub async fn follow(&self, auction_id: Uuid) {
        let first = {
            let mut followed = self
                .followed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = followed.entry(auction_id).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            let (done, confirmed) = oneshot::channel();
            if self
                .subscriptions
                .send(Subscription::Follow(auction_id, done))
                .is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), confirmed).await;
            }
        }
    }

    /// A local stream of `auction_id` ended; the last one unsubscribes.
    pub fn unfollow(&self, auction_id: Uuid) {
        let last = {
            let mut followed = self
                .followed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match followed.get_mut(&auction_id) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    followed.remove(&auction_id);
                    true
                }
                None => false,
            }
        };
        if last {
            let _ = self.subscriptions.send(Subscription::Unfollow(auction_id));
        }
    }

    /// The channel of an auction (for tests and operators).
    pub fn channel(&self, auction_id: Uuid) -> String {
        format!("{}{auction_id}", self.channel_prefix)
    }
}

/// The pub/sub channels of one cluster, and this node's name.
#[derive(Clone)]
struct Channels {
    /// Prefix of the per-auction commit channels.
    commits: String,
    /// The one channel of activity wake-ups.
    activity: String,
    node: String,
}

async fn publisher(
    client: redis::Client,
    channels: Channels,
    mut to_publish: mpsc::Receiver<Outgoing>,
    shutdown: Shutdown,
) {
    let mut connection: Option<ConnectionManager> = None;
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            () = shutdown.wait() => return,
            count = to_publish.recv_many(&mut batch, 256) => if count == 0 { return },
        }
        if connection.is_none() {
            match ConnectionManager::new(client.clone()).await {
                Ok(manager) => connection = Some(manager),
                Err(error) => {
                    tracing::warn!(%error, dropped = batch.len(), "fan-out: Redis unreachable; watchers will fill from the log");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            }
        }
        let Some(manager) = connection.as_mut() else {
            continue;
        };
        let mut pipeline = redis::pipe();
        for outgoing in &batch {
            let published = match outgoing {
                Outgoing::Commit(published) => published,
                Outgoing::Activity(users) => {
                    let wire = ActivityWire {
                        node: channels.node.clone(),
                        users: users.clone(),
                    };
                    match serde_json::to_vec(&wire) {
                        Ok(payload) => {
                            pipeline
                                .cmd("PUBLISH")
                                .arg(&channels.activity)
                                .arg(payload)
                                .ignore();
                        }
                        Err(error) => {
                            tracing::error!(%error, "fan-out: a wake-up could not be encoded")
                        }
                    }
                    continue;
                }
            };
            let wire = Wire {
                auction_id: published.auction_id,
                events: published.events.clone(),
                view: published.view.clone(),
                metadata: Metadata::clone(&published.metadata),
            };
            match serde_json::to_vec(&wire) {
                Ok(payload) => {
                    pipeline
                        .cmd("PUBLISH")
                        .arg(format!("{}{}", channels.commits, published.auction_id))
                        .arg(payload)
                        .ignore();
                }
                Err(error) => tracing::error!(%error, "fan-out: a commit could not be encoded"),
            }
        }
        if let Err(error) = pipeline.query_async::<()>(manager).await {
            tracing::warn!(%error, dropped = batch.len(), "fan-out: publish failed; watchers will fill from the log");
        }
    }
}

async fn subscriber(
    client: redis::Client,
    channels: Channels,
    hub: Arc<Hub>,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
    shutdown: Shutdown,
) {
    // What the node follows, resubscribed after every reconnect.
    let mut followed: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::warn!(%error, "fan-out: cannot subscribe; retrying");
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(RECONNECT_AFTER) => continue,
                }
            }
        };
        let channel_prefix = &channels.commits;
        let (mut sink, mut stream) = pubsub.split();
        let mut healthy = sink.subscribe(&channels.activity).await.is_ok();
        // Wake-ups published while the subscription was down are lost: every
        // local activity stream reads its log once now.
        hub.activity.notify_all();
        for auction_id in &followed {
            if sink
                .subscribe(format!("{channel_prefix}{auction_id}"))
                .await
                .is_err()
            {
                healthy = false;
                break;
            }
        }
        while healthy {
            tokio::select! {
                () = shutdown.wait() => return,
                request = requests.recv() => match request {
                    None => return,
                    Some(Subscription::Follow(auction_id, done)) => {
                        followed.insert(auction_id);
                        if sink.subscribe(format!("{channel_prefix}{auction_id}")).await.is_err() {
                            healthy = false;
                        }
                        let _ = done.send(());
                    }
                    Some(Subscription::Unfollow(auction_id)) => {
                        followed.remove(&auction_id);
                        if sink.unsubscribe(format!("{channel_prefix}{auction_id}")).await.is_err() {
                            healthy = false;
                        }
                    }
                },
                message = stream.next() => match message {
                    None => healthy = false,
                    Some(message) if message.get_channel_name() == channels.activity => {
                        match serde_json::from_slice::<ActivityWire>(message.get_payload_bytes()) {
                            Ok(wire) if wire.node != channels.node => hub.activity.notify(wire.users),
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "fan-out: unreadable wake-up"),
                        }
                    }
                    Some(message) => {
                        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                        match serde_json::from_slice::<Wire>(&payload) {
                            Ok(wire) => hub.publish(Arc::new(Published::new(
                                wire.auction_id,
                                wire.events,
                                wire.view,
                                Arc::new(wire.metadata),
                            ))),
                            Err(error) => tracing::warn!(%error, "fan-out: unreadable message"),
                        }
                    }
                },
            }
        }
        tracing::warn!(
            "fan-out: Redis subscription lost; reconnecting (watchers fill gaps from the log)"
        );
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}
