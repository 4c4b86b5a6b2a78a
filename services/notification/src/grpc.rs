//! The `auction.v1.NotificationService` gRPC surface. Every RPC acts on the
//! caller's own inbox, preferences and webhooks (admins may also list,
//! enable/disable and delete other users' webhooks and read their delivery
//! logs); identity comes only from `auction_platform::auth::caller`.

use std::time::Duration;

use auction_platform::auth::{Caller, Scope, caller};
use auction_platform::bus::timestamp_from_ms;
use auction_proto::v1::notification_service_server::NotificationService;
use auction_proto::v1::{
    DeleteWebhookRequest, DeleteWebhookResponse, GetNotificationPreferencesRequest,
    GetNotificationPreferencesResponse, GetUnreadCountRequest, GetUnreadCountResponse,
    InboxSnapshot, ListNotificationsRequest, ListNotificationsResponse,
    ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, ListWebhooksRequest,
    ListWebhooksResponse, MarkNotificationsReadRequest, MarkNotificationsReadResponse,
    NotificationPreference, NotificationSettings, NotificationType, RegisterWebhookRequest,
    RegisterWebhookResponse, RotateWebhookSecretRequest, RotateWebhookSecretResponse,
    SetWebhookEnabledRequest, SetWebhookEnabledResponse, SnapshotReason, StreamHeartbeat,
    SubscribeRequest, SubscribeResponse, UpdateNotificationPreferencesRequest,
    UpdateNotificationPreferencesResponse, Webhook, WebhookDelivery, WebhookState,
    subscribe_response,
};
use base64::Engine as _;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::NotificationError;
use crate::plan;
use crate::store::{DeliveryRecord, WebhookRow};
use crate::{Service, now_ms, webhook};

/// The stream type of every server-streaming RPC of this service.
type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Webhooks per user.
const MAX_WEBHOOKS_PER_USER: usize = 10;
/// Inbox events read per query while a stream catches up.
const STREAM_PAGE: u32 = 256;
/// Messages buffered per stream before the reader waits for the client.
const STREAM_BUFFER: usize = 64;

fn user_caller<T>(request: &Request<T>) -> Result<(Caller, String), Status> {
    let caller = caller(request)?;
    caller.require_scope(Scope::Notifications)?;
    let user_id = caller.user_id.to_string();
    Ok((caller, user_id))
}

fn valid_request_id(request_id: &str) -> Result<(), NotificationError> {
    let valid = (1..=64).contains(&request_id.len())
        && request_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if valid {
        Ok(())
    } else {
        Err(NotificationError::RequestIdInvalid)
    }
}

fn valid_type(value: i32) -> Result<NotificationType, NotificationError> {
    match NotificationType::try_from(value) {
        Ok(NotificationType::Unspecified) | Err(_) => Err(NotificationError::Validation(format!(
            "notification type {value} is not valid"
        ))),
        Ok(notification_type) => Ok(notification_type),
    }
}

fn webhook_proto(row: &WebhookRow) -> Webhook {
    let types = plan::ALL_TYPES
        .iter()
        .filter(|kind| row.types & (1_i64 << (**kind as i32)) != 0)
        .map(|kind| *kind as i32)
        .collect();
    Webhook {
        webhook_id: row.webhook_id.clone(),
        user_id: row.user_id.clone(),
        url: row.url.clone(),
        description: row.description.clone(),
        types,
        state: row.state,
        consecutive_failures: u32::try_from(row.consecutive_failures).unwrap_or(u32::MAX),
        secret_prefix: row.secret.chars().take(10).collect(),
        create_time: Some(timestamp_from_ms(row.created_at_ms)),
        update_time: Some(timestamp_from_ms(row.updated_at_ms)),
        last_success_time: row.last_success_ms.map(timestamp_from_ms),
        last_failure_time: row.last_failure_ms.map(timestamp_from_ms),
    }
}

fn delivery_proto(record: &DeliveryRecord) -> WebhookDelivery {
    WebhookDelivery {
        delivery_id: record.delivery_id.clone(),
        webhook_id: record.webhook_id.clone(),
        notification_id: record.notification_id.clone(),
        notification_type: record.notification_type,
        attempt_number: u32::try_from(record.attempt_number).unwrap_or(0),
        attempt_time: Some(timestamp_from_ms(record.attempt_time_ms)),
        status_code: i32::try_from(record.status_code).unwrap_or(0),
        error: record.error.clone(),
        outcome: record.outcome,
        next_retry_time: record.next_retry_ms.map(timestamp_from_ms),
        latency: Some(prost_types::Duration {
            seconds: record.latency_ms / 1_000,
            nanos: i32::try_from((record.latency_ms % 1_000) * 1_000_000).unwrap_or(0),
        }),
        response_excerpt: record.response_excerpt.clone(),
    }
}

/// An opaque page token bound to the request's filters.
fn page_token(position: &str, filters: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1|{filters}|{position}"))
}

fn read_page_token(token: &str, filters: &str) -> Result<Option<String>, NotificationError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| NotificationError::PageTokenInvalid)?;
    let text = String::from_utf8(bytes).map_err(|_| NotificationError::PageTokenInvalid)?;
    let mut parts = text.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(bound), Some(position)) if bound == filters => {
            Ok(Some(position.to_owned()))
        }
        _ => Err(NotificationError::PageTokenInvalid),
    }
}

impl Service {
    /// Runs a mutating RPC once per (caller, method, request id): a replay
    /// with the same content gets the stored response; other content gets
    /// ALREADY_EXISTS.
    async fn idempotent<M, F>(
        &self,
        user_id: &str,
        method: &str,
        request_id: &str,
        fingerprint: Vec<u8>,
        run: F,
    ) -> Result<M, NotificationError>
    where
        M: Message + Default,
        F: std::future::Future<Output = Result<M, NotificationError>>,
    {
        valid_request_id(request_id)?;
        if let Some((stored_fingerprint, response)) = self
            .inner
            .store
            .outcome(user_id, method, request_id)
            .await?
        {
            if stored_fingerprint != fingerprint {
                return Err(NotificationError::IdempotencyKeyReused);
            }
            return M::decode(response.as_slice())
                .map_err(|error| NotificationError::Corrupt(error.to_string()));
        }
        let response = run.await?;
        self.inner
            .store
            .remember(
                user_id,
                method,
                request_id,
                &fingerprint,
                &response.encode_to_vec(),
                now_ms(),
            )
            .await?;
        Ok(response)
    }

    async fn settings(&self, user_id: &str) -> Result<NotificationSettings, NotificationError> {
        let (stored, settings) = self.inner.store.preferences(user_id).await?;
        let preferences = plan::ALL_TYPES
            .iter()
            .map(|kind| {
                let chosen = stored
                    .iter()
                    .find(|(stored_type, _)| *stored_type == *kind as i32)
                    .map(|(_, channels)| *channels);
                NotificationPreference {
                    notification_type: *kind as i32,
                    channels: plan::channels_to_proto(plan::effective_channels(*kind, chosen)),
                }
            })
            .collect();
        let lead_ms = settings.ending_soon_lead_ms.unwrap_or_else(|| {
            i64::try_from(self.inner.config.notification.default_ending_soon_lead_ms)
                .unwrap_or(900_000)
        });
        Ok(NotificationSettings {
            preferences,
            ending_soon_lead: Some(prost_types::Duration {
                seconds: lead_ms / 1_000,
                nanos: 0,
            }),
            interest_keywords: settings.interest_keywords,
        })
    }

    /// The caller's live webhook `webhook_id`, if the caller owns it (or is
    /// an admin and `admin_allowed`); NOT_FOUND otherwise.
    async fn owned_webhook(
        &self,
        caller: &Caller,
        webhook_id: &str,
        admin_allowed: bool,
    ) -> Result<WebhookRow, NotificationError> {
        let not_found = || NotificationError::WebhookNotFound(webhook_id.to_owned());
        let row = self
            .inner
            .store
            .webhook(webhook_id)
            .await?
            .ok_or_else(not_found)?;
        let owner = row.user_id.parse().map_err(|_| not_found())?;
        if caller.is_user(owner) || (admin_allowed && caller.is_admin()) {
            Ok(row)
        } else {
            Err(not_found())
        }
    }
}

#[tonic::async_trait]
impl NotificationService for Service {
    type SubscribeStream = ResponseStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let resume_after = request.into_inner().resume_after_sequence;
        let guard = self
            .inner
            .hub
            .open(&user_id)
            .ok_or(NotificationError::StreamLimitReached)?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let inner = std::sync::Arc::clone(&self.inner);
        tokio::spawn(async move {
            let outcome = stream_inbox(&inner, &user_id, resume_after, guard, &sender).await;
            if let Err(status) = outcome {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => 20,
            size => size.clamp(1, 100),
        };
        for kind in &request.types {
            valid_type(*kind)?;
        }
        let filters = format!("{}:{:?}", request.unread_only, request.types);
        let before = read_page_token(&request.page_token, &filters)?
            .map(|position| {
                position
                    .parse::<u64>()
                    .map_err(|_| NotificationError::PageTokenInvalid)
            })
            .transpose()?;
        let limit = u32::try_from(page_size).unwrap_or(20);
        let notifications = self
            .inner
            .store
            .list(&user_id, request.unread_only, &request.types, before, limit)
            .await?;
        let next_page_token = match notifications.last() {
            Some(last) if notifications.len() == limit as usize => {
                page_token(&last.sequence.to_string(), &filters)
            }
            _ => String::new(),
        };
        let unread_count = self.inner.store.unread_count(&user_id).await?;
        Ok(Response::new(ListNotificationsResponse {
            notifications,
            next_page_token,
            unread_count,
        }))
    }

    async fn get_unread_count(
        &self,
        request: Request<GetUnreadCountRequest>,
    ) -> Result<Response<GetUnreadCountResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let sequence = self.inner.store.head(&user_id).await?;
        let unread_count = self.inner.store.unread_count(&user_id).await?;
        Ok(Response::new(GetUnreadCountResponse {
            unread_count,
            sequence,
        }))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<MarkNotificationsReadRequest>,
    ) -> Result<Response<MarkNotificationsReadResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        if request.notification_ids.is_empty() && request.up_to_sequence == 0 {
            return Err(NotificationError::Validation(
                "give notification_ids or up_to_sequence".to_owned(),
            )
            .into());
        }
        if request.notification_ids.len() > 500 {
            return Err(
                NotificationError::Validation("at most 500 notification_ids".to_owned()).into(),
            );
        }
        let fingerprint = MarkNotificationsReadRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let response = self
            .idempotent(
                &user_id,
                "MarkNotificationsRead",
                &request.request_id,
                fingerprint,
                async {
                    let (unread_count, sequence) = self
                        .inner
                        .store
                        .mark_read(
                            &user_id,
                            &request.notification_ids,
                            request.up_to_sequence,
                            now_ms(),
                        )
                        .await?;
                    if let Some(sequence) = sequence {
                        self.inner.hub.notify(&user_id, sequence);
                    }
                    Ok(MarkNotificationsReadResponse { unread_count })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_notification_preferences(
        &self,
        request: Request<GetNotificationPreferencesRequest>,
    ) -> Result<Response<GetNotificationPreferencesResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let settings = self.settings(&user_id).await?;
        Ok(Response::new(GetNotificationPreferencesResponse {
            settings: Some(settings),
        }))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<UpdateNotificationPreferencesResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let mut changes: Vec<(i32, i64)> = Vec::new();
        for preference in &request.preferences {
            let kind = valid_type(preference.notification_type)?;
            if changes.iter().any(|(seen, _)| *seen == kind as i32) {
                return Err(NotificationError::Validation(format!(
                    "{} listed twice",
                    kind.as_str_name()
                ))
                .into());
            }
            let mut channels = 0;
            for channel in &preference.channels {
                channels |= plan::channel_bit(*channel).ok_or_else(|| {
                    NotificationError::Validation(format!("channel {channel} is not valid"))
                })?;
            }
            if plan::in_app_forced(kind) {
                channels |= plan::IN_APP;
            }
            changes.push((kind as i32, channels));
        }
        let lead_ms = match &request.ending_soon_lead {
            None => None,
            Some(lead) => {
                let ms = lead.seconds.saturating_mul(1_000) + i64::from(lead.nanos) / 1_000_000;
                if !(60_000..=86_400_000).contains(&ms) {
                    return Err(NotificationError::Validation(
                        "ending_soon_lead must be between 1 minute and 24 hours".to_owned(),
                    )
                    .into());
                }
                Some(ms)
            }
        };
        let keywords = match &request.interest_keywords {
            None => None,
            Some(list) => {
                if list.keywords.len() > 20
                    || list.keywords.iter().any(|keyword| {
                        !(2..=50).contains(&keyword.chars().count()) || keyword.contains('\n')
                    })
                {
                    return Err(NotificationError::Validation(
                        "at most 20 keywords of 2-50 characters".to_owned(),
                    )
                    .into());
                }
                Some(list.keywords.clone())
            }
        };
        let fingerprint = UpdateNotificationPreferencesRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let response = self
            .idempotent(
                &user_id,
                "UpdateNotificationPreferences",
                &request.request_id,
                fingerprint,
                async {
                    self.inner
                        .store
                        .update_preferences(&user_id, &changes, lead_ms, keywords.as_deref())
                        .await?;
                    Ok(UpdateNotificationPreferencesResponse {
                        settings: Some(self.settings(&user_id).await?),
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn register_webhook(
        &self,
        request: Request<RegisterWebhookRequest>,
    ) -> Result<Response<RegisterWebhookResponse>, Status> {
        let (_, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        if request.description.chars().count() > 200 {
            return Err(NotificationError::Validation(
                "description is longer than 200 characters".to_owned(),
            )
            .into());
        }
        let mut types = 0_i64;
        for kind in &request.types {
            types |= 1_i64 << (valid_type(*kind)? as i32);
        }
        let fingerprint = RegisterWebhookRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let allow_insecure = self.inner.config.notification.allow_insecure_webhook_urls;
        let response = self
            .idempotent(
                &user_id,
                "RegisterWebhook",
                &request.request_id,
                fingerprint,
                async {
                    webhook::validate_url(&request.url, allow_insecure).await?;
                    if self.inner.store.webhooks(&user_id).await?.len() >= MAX_WEBHOOKS_PER_USER {
                        return Err(NotificationError::WebhookLimitReached);
                    }
                    let now = now_ms();
                    let row = WebhookRow {
                        webhook_id: uuid::Uuid::now_v7().to_string(),
                        user_id: user_id.clone(),
                        url: request.url.clone(),
                        description: request.description.clone(),
                        types,
                        state: WebhookState::Enabled as i32,
                        consecutive_failures: 0,
                        secret: webhook::generate_secret(),
                        previous_secret: None,
                        previous_secret_expires_ms: None,
                        created_at_ms: now,
                        updated_at_ms: now,
                        last_success_ms: None,
                        last_failure_ms: None,
                    };
                    self.inner.store.insert_webhook(&row).await?;
                    Ok(RegisterWebhookResponse {
                        webhook: Some(webhook_proto(&row)),
                        signing_secret: row.secret.clone(),
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let (caller, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let owner = if request.user_id.is_empty() || request.user_id == user_id {
            user_id
        } else {
            caller.require_admin()?;
            request.user_id.clone()
        };
        // At most 10 webhooks per user: one page always holds them all.
        if !request.page_token.is_empty() {
            return Err(NotificationError::PageTokenInvalid.into());
        }
        let webhooks = self
            .inner
            .store
            .webhooks(&owner)
            .await?
            .iter()
            .map(webhook_proto)
            .collect();
        Ok(Response::new(ListWebhooksResponse {
            webhooks,
            next_page_token: String::new(),
        }))
    }

    async fn set_webhook_enabled(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<SetWebhookEnabledResponse>, Status> {
        let (caller, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let fingerprint = SetWebhookEnabledRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let response = self
            .idempotent(
                &user_id,
                "SetWebhookEnabled",
                &request.request_id,
                fingerprint,
                async {
                    let row = self
                        .owned_webhook(&caller, &request.webhook_id, true)
                        .await?;
                    let state = if request.enabled {
                        WebhookState::Enabled
                    } else {
                        WebhookState::Disabled
                    };
                    self.inner
                        .store
                        .set_webhook_state(&row.webhook_id, state as i32, now_ms())
                        .await?;
                    let row = self
                        .owned_webhook(&caller, &request.webhook_id, true)
                        .await?;
                    Ok(SetWebhookEnabledResponse {
                        webhook: Some(webhook_proto(&row)),
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let (caller, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let fingerprint = RotateWebhookSecretRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let response = self
            .idempotent(
                &user_id,
                "RotateWebhookSecret",
                &request.request_id,
                fingerprint,
                async {
                    let row = self
                        .owned_webhook(&caller, &request.webhook_id, false)
                        .await?;
                    let now = now_ms();
                    let secret = webhook::generate_secret();
                    let expires = now + webhook::PREVIOUS_SECRET_VALIDITY_MS;
                    self.inner
                        .store
                        .rotate_secret(&row.webhook_id, &secret, &row.secret, expires, now)
                        .await?;
                    let row = self
                        .owned_webhook(&caller, &request.webhook_id, false)
                        .await?;
                    Ok(RotateWebhookSecretResponse {
                        webhook: Some(webhook_proto(&row)),
                        signing_secret: secret,
                        previous_secret_expire_time: Some(timestamp_from_ms(expires)),
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let (caller, user_id) = user_caller(&request)?;
        let request = request.into_inner();
        let fingerprint = DeleteWebhookRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let response = self
            .idempotent(
                &user_id,
                "DeleteWebhook",
                &request.request_id,
                fingerprint,
                async {
                    let row = self
                        .owned_webhook(&caller, &request.webhook_id, true)
                        .await?;
                    self.inner
                        .store
                        .delete_webhook(&row.webhook_id, now_ms())
                        .await?;
                    Ok(DeleteWebhookResponse {
                        webhook_id: row.webhook_id,
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let (caller, _) = user_caller(&request)?;
        let request = request.into_inner();
        let row = self
            .owned_webhook(&caller, &request.webhook_id, true)
            .await?;
        let page_size = match request.page_size {
            0 => 50,
            size => size.clamp(1, 200),
        };
        let filters = format!(
            "{}:{:?}:{}",
            request.webhook_id, request.outcomes, request.notification_id
        );
        let before = read_page_token(&request.page_token, &filters)?;
        let limit = u32::try_from(page_size).unwrap_or(50);
        let records = self
            .inner
            .store
            .deliveries(
                &row.webhook_id,
                &request.outcomes,
                &request.notification_id,
                before.as_deref(),
                limit,
            )
            .await?;
        let next_page_token = match records.last() {
            Some(last) if records.len() == limit as usize => {
                page_token(&last.delivery_id, &filters)
            }
            _ => String::new(),
        };
        Ok(Response::new(ListWebhookDeliveriesResponse {
            deliveries: records.iter().map(delivery_proto).collect(),
            next_page_token,
        }))
    }
}

type StreamSender = mpsc::Sender<Result<SubscribeResponse, Status>>;

async fn send(sender: &StreamSender, message: subscribe_response::Message) -> bool {
    sender
        .send(Ok(SubscribeResponse {
            message: Some(message),
        }))
        .await
        .is_ok()
}

fn heartbeat(sequence: u64) -> subscribe_response::Message {
    subscribe_response::Message::Heartbeat(StreamHeartbeat {
        server_time: Some(timestamp_from_ms(now_ms())),
        latest_sequence: sequence,
    })
}

/// One Subscribe stream: a snapshot (fresh start or unknown resume point) or
/// a heartbeat (resume), then every inbox event after the last one sent,
/// read from the store whenever the hub says the inbox grew (and at every
/// heartbeat, which also covers inbox writes made by another node).
async fn stream_inbox(
    inner: &crate::Inner,
    user_id: &str,
    resume_after: u64,
    mut guard: crate::hub::StreamGuard,
    sender: &StreamSender,
) -> Result<(), Status> {
    // Seen before reading, so a write after this point wakes the loop.
    guard.receiver.borrow_and_update();
    let head = inner.store.head(user_id).await?;
    let mut last = if resume_after == 0 || resume_after > head {
        let reason = if resume_after == 0 {
            SnapshotReason::Initial
        } else {
            SnapshotReason::ResumeUnknown
        };
        let recent = inner.store.list(user_id, false, &[], None, 50).await?;
        let unread_count = inner.store.unread_count(user_id).await?;
        let snapshot = InboxSnapshot {
            reason: reason as i32,
            sequence: head,
            unread_count,
            recent,
        };
        if !send(sender, subscribe_response::Message::Snapshot(snapshot)).await {
            return Ok(());
        }
        head
    } else {
        if !send(sender, heartbeat(head)).await {
            return Ok(());
        }
        resume_after
    };
    let interval = Duration::from_millis(inner.config.notification.heartbeat_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        loop {
            let events = inner.store.inbox_after(user_id, last, STREAM_PAGE).await?;
            let Some(newest) = events.last().map(|event| event.sequence) else {
                break;
            };
            for event in events {
                if !send(sender, subscribe_response::Message::Event(event)).await {
                    return Ok(());
                }
            }
            last = newest;
        }
        tokio::select! {
            changed = guard.receiver.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                guard.receiver.borrow_and_update();
            }
            _ = ticker.tick() => {
                if !send(sender, heartbeat(last)).await {
                    return Ok(());
                }
            }
            () = sender.closed() => return Ok(()),
            () = inner.shutdown.wait() => {
                return Err(Status::unavailable("the server is draining; reconnect with the last applied sequence"));
            }
        }
    }
}
