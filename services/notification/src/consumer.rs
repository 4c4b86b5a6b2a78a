//! The bus consumer and the ending-soon scheduler: both turn facts into
//! stored notifications through [`crate::store::Store`], then wake the
//! user streams and the delivery workers.

use std::sync::Arc;
use std::time::Duration;

use auction_platform::Shutdown;
use auction_platform::bus::{
    ApplyEvents, BoxFuture, Envelope, HandleError, TOPIC_AUCTION, TOPIC_CATALOG, TOPIC_ORDER,
    TOPIC_USER,
};

use crate::Inner;
use crate::store::{Incoming, Produced};

/// The consumer group of the notification service on every topic.
pub const GROUP: &str = "notification";

/// The topics the service consumes.
pub fn topics() -> Vec<String> {
    [TOPIC_AUCTION, TOPIC_ORDER, TOPIC_CATALOG, TOPIC_USER]
        .map(str::to_owned)
        .to_vec()
}

/// Consumes bus events into notifications (subscribed as
/// `Batched(Consumer)`: a batch of events in one transaction).
pub struct Consumer {
    /// The service.
    pub inner: Arc<Inner>,
}

impl ApplyEvents for Consumer {
    type Event = Incoming;

    fn decode(&self, envelope: &Envelope) -> Result<Incoming, HandleError> {
        Ok(match envelope.topic.as_str() {
            TOPIC_AUCTION => Incoming::Auction(envelope.decode()?),
            TOPIC_ORDER => Incoming::Order(envelope.decode()?),
            TOPIC_CATALOG => Incoming::Catalog(envelope.decode()?),
            TOPIC_USER => Incoming::User(envelope.decode()?),
            other => return Err(format!("unexpected topic {other}").into()),
        })
    }

    fn apply_together<'a>(
        &'a self,
        events: &'a [(&'a Envelope, Incoming)],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let event_ids: Vec<String> = events
                .iter()
                .map(|(envelope, _)| envelope.event_id.to_string())
                .collect();
            let events: Vec<(&str, &str, &Incoming)> = events
                .iter()
                .zip(&event_ids)
                .map(|((envelope, incoming), event_id)| {
                    (event_id.as_str(), envelope.topic.as_str(), incoming)
                })
                .collect();
            let produced = self
                .inner
                .store
                .consume_batch(&events, crate::now_ms())
                .await?;
            for produced in produced.iter().flatten() {
                self.inner.after_commit(produced);
            }
            Ok(())
        })
    }

    fn apply_alone<'a>(
        &'a self,
        envelope: &'a Envelope,
        incoming: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let produced = self
                .inner
                .store
                .consume(
                    &envelope.event_id.to_string(),
                    &envelope.topic,
                    incoming,
                    crate::now_ms(),
                )
                .await?;
            if let Some(produced) = produced {
                self.inner.after_commit(&produced);
            }
            Ok(())
        })
    }
}

impl Inner {
    /// Wakes streams and workers for what a commit produced.
    pub fn after_commit(&self, produced: &Produced) {
        for (user, sequence) in &produced.inbox {
            self.hub.notify(user, *sequence);
        }
        if produced.webhooks {
            self.wake_webhooks.notify_one();
        }
        if produced.emails {
            self.wake_emails.notify_one();
        }
    }
}

/// Sends ENDING_SOON notifications as auctions approach their end: every
/// `ending_soon_scan_interval_ms`, the participants of open auctions ending
/// within a day whose lead time has come, and who were not told yet, are
/// found in one query and told.
pub async fn run_ending_soon(inner: Arc<Inner>, shutdown: Shutdown) {
    let config = &inner.config.notification;
    let interval = Duration::from_millis(config.ending_soon_scan_interval_ms);
    let default_lead_ms = i64::try_from(config.default_ending_soon_lead_ms).unwrap_or(i64::MAX);
    loop {
        let now_ms = crate::now_ms();
        match inner
            .store
            .ending_soon_due(now_ms, 86_400_000, default_lead_ms)
            .await
        {
            Ok(due) => {
                for auction in &due {
                    match inner.store.deliver_ending_soon(auction, now_ms).await {
                        Ok(produced) => inner.after_commit(&produced),
                        Err(error) => {
                            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), auction_id = %auction.auction_id, "ending-soon delivery failed")
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "ending-soon scan failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
    }
}
