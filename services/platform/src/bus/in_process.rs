//! The event bus inside one process, for the embedded default and tests.
//!
//! Same contract as the Redis bus: per topic an ordered log; per (topic,
//! group) a cursor shared by the group's consumers, so each message goes to
//! one consumer of each group; messages are handed over in batches of up to
//! [`MAX_BATCH`] (`Handler::handle_batch`; an idle consumer waits
//! [`IDLE_LINGER`] after the first new message so that a batch gathers),
//! and one whose handling failed is
//! retried alone with a short back-off before the next batch is taken, and
//! set aside as dead after `max_deliveries` failures.
//!
//! Nothing here survives the process, so a message counts as delivered only
//! once every group subscribed to its topic has HANDLED it: `publish`
//! returns then, and only then does the producer's outbox relay mark the
//! rows published. A stop or a crash before that leaves them unmarked and
//! the restarted relay publishes them again (consumers deduplicate by event
//! id). Before, `publish` returned once the message was in memory: a stop
//! while a consumer had not yet taken it lost the event for good (a
//! catalog listing never saw its absentee bid; a sale could have lost its
//! order). While a process mounts its services, [`EventBus::hold_deliveries`]
//! keeps publishers waiting, so no group subscribes after messages it would
//! have had to handle were counted as delivered. Each topic keeps at most
//! [`MAX_RETAINED`] messages; a group further behind skips the oldest
//! (logged).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{
    BoxFuture, BusError, DeliveryHold, Envelope, EventBus, HandleError, Handler, MAX_BATCH,
    Subscription,
};
use crate::Shutdown;

/// Messages kept per topic.
pub const MAX_RETAINED: usize = 100_000;

/// How long an idle consumer waits after the first new message before it
/// takes its batch, so that what is published meanwhile joins it. A
/// consumer commits (and fsyncs) once per batch: woken for every commit of
/// the producer, the embedded server's consumers made as many commits as
/// the bidding log itself, each with its fixed cost, on the same two cores.
/// A busy consumer never waits (it takes what piled up while it worked).
/// The producer's relay waits too (a message is delivered once handled),
/// so its next round gathers what the producer committed meanwhile.
pub const IDLE_LINGER: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Topic {
    /// Retained messages; the first has position `base`.
    log: VecDeque<Envelope>,
    /// Position of `log[0]`.
    base: u64,
    /// The group cursors: the next position each group takes.
    cursors: HashMap<String, u64>,
    /// Per group, the position up to which (exclusive) it has handled
    /// every message: a publish waits for each group to pass its messages.
    handled: HashMap<String, u64>,
    /// Messages that failed `max_deliveries` times.
    dead: Vec<Envelope>,
}

/// The in-process bus.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    /// Bumped on every publish; consumers wait on it.
    published: watch::Sender<u64>,
    /// Bumped whenever a group has handled a batch; publishers wait on it.
    progress: watch::Sender<u64>,
    /// Holds while a process mounts its services ([`EventBus::hold_deliveries`]).
    holds: watch::Sender<usize>,
    max_deliveries: u32,
}

impl InProcessBus {
    /// An empty bus; a message is dead after `max_deliveries` failures.
    pub fn new(max_deliveries: u32) -> Self {
        Self {
            topics: Arc::new(Mutex::new(HashMap::new())),
            published: watch::channel(0).0,
            progress: watch::channel(0).0,
            holds: watch::channel(0).0,
            max_deliveries: max_deliveries.max(1),
        }
    }

    /// The dead-lettered messages of `topic`, oldest first.
    pub fn dead_letters(&self, topic: &str) -> Vec<Envelope> {
        let topics = self.lock();
        topics
            .get(topic)
            .map(|topic| topic.dead.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `group`'s consumer on `topic` (from the oldest retained
    /// message, for a group new to the topic). One consumer per group and
    /// topic: with two, a publish could return when the faster one had
    /// handled its batch while the other had not.
    fn register(&self, topic_name: &str, group: &str) {
        let mut topics = self.lock();
        let topic = topics
            .entry(topic_name.to_owned())
            .or_insert_with(empty_topic);
        let base = topic.base;
        let cursor = *topic.cursors.entry(group.to_owned()).or_insert(base);
        if topic.handled.insert(group.to_owned(), cursor).is_some() {
            tracing::error!(
                topic = topic_name,
                group,
                "in-process bus: a second consumer for one group and topic; a publish may count a message delivered before both handled it"
            );
        }
    }

    /// Forgets `group`'s consumer on `topic` (its task ended other than by
    /// shutdown: a panic), so publishes stop waiting for it; the group's
    /// later messages are not handled by it.
    fn unregister(&self, topic_name: &str, group: &str) {
        {
            let mut topics = self.lock();
            if let Some(topic) = topics.get_mut(topic_name) {
                topic.handled.remove(group);
            }
        }
        tracing::error!(
            topic = topic_name,
            group,
            "in-process bus: a consumer stopped before shutdown; its group no longer receives this topic"
        );
        self.progress.send_modify(|count| *count += 1);
    }

    /// Records that `group` has handled every message of `topic` before
    /// position `upto`, and wakes the publishers waiting for it.
    fn handled(&self, topic: &str, group: &str, upto: u64) {
        {
            let mut topics = self.lock();
            let topic = topics.entry(topic.to_owned()).or_insert_with(empty_topic);
            let handled = topic.handled.entry(group.to_owned()).or_insert(upto);
            *handled = (*handled).max(upto);
        }
        self.progress.send_modify(|count| *count += 1);
    }

    /// Whether every group registered on each `(topic, end)` has handled
    /// the topic's messages before `end`.
    fn all_handled(&self, ends: &HashMap<String, u64>) -> bool {
        let topics = self.lock();
        ends.iter().all(|(name, end)| {
            topics
                .get(name)
                .is_none_or(|topic| topic.handled.values().all(|handled| handled >= end))
        })
    }

    /// Takes the next messages (at most `max`) for `group` on `topic`,
    /// advancing the cursor past them; returns them and the position after
    /// them.
    fn take(&self, topic: &str, group: &str, max: usize) -> (Vec<Envelope>, u64) {
        let mut topics = self.lock();
        let topic = topics.entry(topic.to_owned()).or_insert_with(empty_topic);
        let base = topic.base;
        let cursor = topic.cursors.entry(group.to_owned()).or_insert(base);
        if *cursor < base {
            tracing::warn!(
                group,
                skipped = base - *cursor,
                "in-process bus: consumer group fell behind the retained log"
            );
            *cursor = base;
        }
        let Ok(index) = usize::try_from(*cursor - base) else {
            return (Vec::new(), *cursor);
        };
        let taken: Vec<Envelope> = topic.log.iter().skip(index).take(max).cloned().collect();
        *cursor += taken.len() as u64;
        (taken, *cursor)
    }

    /// Delivers `envelope` again after its first delivery failed with
    /// `error`, until it succeeds or has failed `max_deliveries` times (then
    /// it is dead-lettered). False when shutdown interrupted it.
    async fn retry(
        &self,
        handler: &dyn Handler,
        envelope: Envelope,
        mut error: HandleError,
        shutdown: &Shutdown,
    ) -> bool {
        let mut attempt = 1;
        loop {
            if attempt >= self.max_deliveries {
                tracing::warn!(%error, attempt, "in-process bus: handler failed for good");
                self.bury(envelope);
                return true;
            }
            tracing::warn!(%error, attempt, "in-process bus: handler failed; retrying");
            let delay = Duration::from_millis(10 << attempt.min(8));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return false,
            }
            attempt += 1;
            match handler.handle(&envelope).await {
                Ok(()) => return true,
                Err(failed) => error = failed,
            }
        }
    }

    fn bury(&self, envelope: Envelope) {
        let mut topics = self.lock();
        let topic = topics
            .entry(envelope.topic.clone())
            .or_insert_with(empty_topic);
        tracing::error!(event_id = %envelope.event_id, topic = %envelope.topic, "in-process bus: message dead-lettered");
        topic.dead.push(envelope);
    }
}

/// A consumer task's registration: dropped when the task ends; unless the
/// process is shutting down (publishes are dropped with their relays then),
/// the group stops counting for deliveries.
struct Registered {
    bus: InProcessBus,
    topic: String,
    group: String,
    shutdown: Shutdown,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.shutdown.is_triggered() {
            self.bus.unregister(&self.topic, &self.group);
        }
    }
}

fn empty_topic() -> Topic {
    Topic {
        log: VecDeque::new(),
        base: 0,
        cursors: HashMap::new(),
        handled: HashMap::new(),
        dead: Vec::new(),
    }
}

impl EventBus for InProcessBus {
    fn publish<'a>(&'a self, envelopes: &'a [Envelope]) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            // Not while the process mounts its services.
            let mut holds = self.holds.subscribe();
            if holds.wait_for(|holds| *holds == 0).await.is_err() {
                return Ok(());
            }
            // Subscribed before the messages go in, so no progress is missed.
            let mut progress = self.progress.subscribe();
            let mut ends: HashMap<String, u64> = HashMap::new();
            {
                let mut topics = self.lock();
                for envelope in envelopes {
                    let topic = topics
                        .entry(envelope.topic.clone())
                        .or_insert_with(empty_topic);
                    topic.log.push_back(envelope.clone());
                    while topic.log.len() > MAX_RETAINED {
                        topic.log.pop_front();
                        topic.base += 1;
                    }
                    ends.insert(envelope.topic.clone(), topic.base + topic.log.len() as u64);
                }
            }
            self.published.send_modify(|count| *count += 1);
            // Delivered = handled by every group (see the module comment).
            // Dropped at shutdown with the relay's task: the rows stay
            // unmarked and are published again after the restart.
            loop {
                progress.borrow_and_update();
                if self.all_handled(&ends) {
                    return Ok(());
                }
                if progress.changed().await.is_err() {
                    return Ok(());
                }
            }
        })
    }

    fn hold_deliveries(&self) -> DeliveryHold {
        self.holds.send_modify(|holds| *holds += 1);
        let holds = self.holds.clone();
        DeliveryHold::new(move || holds.send_modify(|holds| *holds = holds.saturating_sub(1)))
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
                let bus = self.clone();
                let topic = topic.clone();
                let group = subscription.group.clone();
                let shutdown = subscription.shutdown.clone();
                let handler = Arc::clone(&handler);
                // Registered now, before any task runs: a publish from here
                // on waits for this group too.
                bus.register(&topic, &group);
                tokio::spawn(async move {
                    // A task that ends before shutdown (a handler panicked)
                    // must not leave every publish on its topic waiting.
                    let _registered = Registered {
                        bus: bus.clone(),
                        topic: topic.clone(),
                        group: group.clone(),
                        shutdown: shutdown.clone(),
                    };
                    let mut published = bus.published.subscribe();
                    loop {
                        // Mark the current count seen before draining, so a
                        // publish during the drain wakes the next wait.
                        published.borrow_and_update();
                        loop {
                            let (batch, upto) = bus.take(&topic, &group, MAX_BATCH);
                            if batch.is_empty() {
                                break;
                            }
                            let mut results = handler.handle_batch(&batch).await.into_iter();
                            // A failed message is retried alone (with
                            // back-off) before the next batch is taken; one
                            // the handler gave no result for counts as failed.
                            for envelope in batch {
                                let result = results.next().unwrap_or_else(|| {
                                    Err("the handler returned no result for this message".into())
                                });
                                if let Err(error) = result
                                    && !bus.retry(&*handler, envelope, error, &shutdown).await
                                {
                                    return;
                                }
                            }
                            // Handled or dead-lettered, every one of them.
                            bus.handled(&topic, &group, upto);
                            if shutdown.is_triggered() {
                                return;
                            }
                        }
                        tokio::select! {
                            changed = published.changed() => if changed.is_err() { return },
                            () = shutdown.wait() => return,
                        }
                        tokio::select! {
                            () = tokio::time::sleep(IDLE_LINGER) => {}
                            () = shutdown.wait() => return,
                        }
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Recorder {
        seen: Mutex<Vec<String>>,
        failures_left: AtomicU32,
        sender: tokio::sync::mpsc::UnboundedSender<String>,
    }

    impl Handler for Recorder {
        fn handle<'a>(
            &'a self,
            envelope: &'a Envelope,
        ) -> BoxFuture<'a, Result<(), super::super::HandleError>> {
            Box::pin(async move {
                if self.failures_left.load(Ordering::SeqCst) > 0 {
                    self.failures_left.fetch_sub(1, Ordering::SeqCst);
                    return Err("not yet".into());
                }
                self.seen.lock().unwrap().push(envelope.key.clone());
                let _ = self.sender.send(envelope.key.clone());
                Ok(())
            })
        }
    }

    fn envelope(key: &str) -> Envelope {
        Envelope {
            event_id: uuid::Uuid::now_v7(),
            topic: "t".to_owned(),
            key: key.to_owned(),
            occurred_at_ms: 0,
            payload_type: "x".to_owned(),
            payload: Vec::new(),
            producer: "test".to_owned(),
        }
    }

    // Proves messages reach a group in order, a failing handler is retried
    // until it succeeds, and one that always fails ends in the dead letters
    // (a message that failed is retried after the rest of its batch: order
    // holds while handlers succeed, as with Redis).
    #[tokio::test]
    async fn delivers_in_order_retries_and_dead_letters() {
        let bus = InProcessBus::new(3);
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            failures_left: AtomicU32::new(0),
            sender,
        });
        let shutdown = Shutdown::new();
        bus.subscribe(
            Subscription {
                group: "g".to_owned(),
                topics: vec!["t".to_owned()],
                shutdown: shutdown.clone(),
            },
            recorder.clone(),
        );
        bus.publish(&[envelope("1"), envelope("2"), envelope("3")])
            .await
            .unwrap();
        for expected in ["1", "2", "3"] {
            let key = tokio::time::timeout(Duration::from_secs(5), received.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(key, expected);
        }
        // Two failures, then success on the third delivery.
        recorder.failures_left.store(2, Ordering::SeqCst);
        bus.publish(&[envelope("retried")]).await.unwrap();
        let key = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key, "retried");
        assert_eq!(recorder.failures_left.load(Ordering::SeqCst), 0);
        // Now every delivery fails: three tries, then the dead letters.
        recorder.failures_left.store(u32::MAX, Ordering::SeqCst);
        bus.publish(&[envelope("4")]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while bus.dead_letters("t").is_empty() {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(bus.dead_letters("t")[0].key, "4");
        shutdown.trigger();
    }

    /// Handles a message only once `gate` opens.
    struct Gated {
        gate: tokio::sync::Semaphore,
        handled: AtomicU32,
    }

    impl Handler for Gated {
        fn handle<'a>(
            &'a self,
            _envelope: &'a Envelope,
        ) -> BoxFuture<'a, Result<(), super::super::HandleError>> {
            Box::pin(async move {
                self.gate.acquire().await?.forget();
                self.handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    fn gated(bus: &InProcessBus, group: &str, shutdown: &Shutdown) -> Arc<Gated> {
        let handler = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            handled: AtomicU32::new(0),
        });
        bus.subscribe(
            Subscription {
                group: group.to_owned(),
                topics: vec!["t".to_owned()],
                shutdown: shutdown.clone(),
            },
            handler.clone(),
        );
        handler
    }

    // Proves a publish returns only once every subscribed group has handled
    // the message (what the outbox relay's mark then means), and that while
    // deliveries are held no publish goes through: a group subscribing
    // meanwhile is waited for too.
    #[tokio::test]
    async fn publish_returns_once_every_group_handled() {
        let bus = InProcessBus::new(3);
        let shutdown = Shutdown::new();
        let hold = bus.hold_deliveries();
        let early = gated(&bus, "early", &shutdown);
        // The early group would handle the message at once.
        early.gate.add_permits(1);
        let publishing = tokio::spawn({
            let bus = bus.clone();
            async move { bus.publish(&[envelope("1")]).await }
        });
        // A negative check: ten times the consumers' linger, in which an
        // unheld publish is handled.
        tokio::time::sleep(IDLE_LINGER * 10).await;
        assert_eq!(
            early.handled.load(Ordering::SeqCst),
            0,
            "published through the hold"
        );
        let late = gated(&bus, "late", &shutdown);
        drop(hold);
        tokio::time::timeout(Duration::from_secs(5), async {
            while early.handled.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the early group handles the message");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !publishing.is_finished(),
            "returned before the late group handled it"
        );
        late.gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("publish returns once both handled")
            .unwrap()
            .unwrap();
        assert_eq!(late.handled.load(Ordering::SeqCst), 1);
        shutdown.trigger();
    }

    /// Panics on every message.
    struct Panicking;

    impl Handler for Panicking {
        fn handle<'a>(
            &'a self,
            _envelope: &'a Envelope,
        ) -> BoxFuture<'a, Result<(), super::super::HandleError>> {
            Box::pin(async move { panic!("a handler bug") })
        }
    }

    // Proves a consumer whose task died (a panicking handler) does not leave
    // publishes on its topic waiting forever: the other groups go on.
    #[tokio::test]
    async fn a_dead_consumer_does_not_hold_publishing() {
        let bus = InProcessBus::new(3);
        let shutdown = Shutdown::new();
        bus.subscribe(
            Subscription {
                group: "broken".to_owned(),
                topics: vec!["t".to_owned()],
                shutdown: shutdown.clone(),
            },
            Arc::new(Panicking),
        );
        let healthy = gated(&bus, "healthy", &shutdown);
        healthy.gate.add_permits(2);
        tokio::time::timeout(Duration::from_secs(5), bus.publish(&[envelope("1")]))
            .await
            .expect("the first publish returns once the broken consumer is gone")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), bus.publish(&[envelope("2")]))
            .await
            .expect("and so does the next")
            .unwrap();
        assert_eq!(healthy.handled.load(Ordering::SeqCst), 2);
        shutdown.trigger();
    }
}
