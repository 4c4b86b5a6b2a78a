//! Partner webhooks: secrets, URL checks, signatures, the JSON body, and the
//! delivery worker (retries with back-off and jitter, auto-disable, the
//! delivery log). The contract is in the header of notification.proto.
//!
//! Deliveries are HTTP/1.1 POSTs through hyper; `https://` endpoints go
//! over rustls (ring) and are checked against the system's trust store plus
//! `notification.webhook_extra_ca_file`; `http://` only where insecure URLs
//! are allowed (the URL check refuses them otherwise).

use std::sync::Arc;
use std::time::{Duration, Instant};

use auction_platform::Shutdown;
use auction_platform::bus::timestamp_from_ms;
use auction_proto::v1::{DeliveryOutcome, Notification, NotificationType, WebhookState};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;
use sha2::Sha256;

use crate::Inner;
use crate::error::NotificationError;
use crate::store::{DeliveryRecord, WebhookJob};

/// How long the previous secret keeps signing after a rotation.
pub const PREVIOUS_SECRET_VALIDITY_MS: i64 = 24 * 3_600_000;
/// Deliveries attempted concurrently.
const CONCURRENT_DELIVERIES: u32 = 16;

/// A new signing secret: `whsec_` and 43 base64url characters (32 random bytes).
pub fn generate_secret() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` with `secret`.
pub fn sign(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(error) => unreachable!("HMAC takes any key length: {error}"),
    };
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Auction-Signature` header: `t=<secs>,v1=<sig>[,v1=<sig with the previous secret>]`.
pub fn signature_header(secrets: &[&str], timestamp_secs: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp_secs}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&sign(secret, timestamp_secs, body));
    }
    header
}

/// Checks a webhook URL: https (http only when `allow_insecure`), at most
/// 2048 characters, and (unless `allow_insecure`) a host that resolves only
/// to public addresses.
pub async fn validate_url(url: &str, allow_insecure: bool) -> Result<(), NotificationError> {
    let invalid = |why: &str| NotificationError::WebhookUrlInvalid(why.to_owned());
    if url.len() > 2_048 {
        return Err(invalid("longer than 2048 characters"));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    match scheme {
        "https" => {}
        "http" if allow_insecure => {}
        _ => return Err(invalid("must be https")),
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    if allow_insecure {
        return Ok(());
    }
    let port = uri.port_u16().unwrap_or(443);
    let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|_| invalid("host does not resolve"))?
        .collect::<Vec<_>>();
    if addresses.is_empty() || addresses.iter().any(|address| is_private(address.ip())) {
        return Err(invalid("resolves to a private address"));
    }
    Ok(())
}

fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The proto3 JSON form of a notification (default values omitted).
pub fn notification_json(notification: &Notification) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    let mut text = |name: &str, value: &str| {
        if !value.is_empty() {
            object.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
        }
    };
    text("notificationId", &notification.notification_id);
    text("userId", &notification.user_id);
    text(
        "notificationType",
        NotificationType::try_from(notification.notification_type)
            .map_or("NOTIFICATION_TYPE_UNSPECIFIED", |kind| kind.as_str_name()),
    );
    text("title", &notification.title);
    text("body", &notification.body);
    text("actionPath", &notification.action_path);
    text("auctionId", &notification.auction_id);
    text("orderId", &notification.order_id);
    text("disputeId", &notification.dispute_id);
    text("liveSessionId", &notification.live_session_id);
    text("offerId", &notification.offer_id);
    if let Some(amount) = &notification.amount {
        object.insert(
            "amount".to_owned(),
            serde_json::json!({ "currency": amount.currency, "amount": amount.amount }),
        );
    }
    for (name, time) in [
        ("deadlineTime", notification.deadline_time),
        ("createTime", notification.create_time),
        ("readTime", notification.read_time),
    ] {
        if let Some(time) = time {
            object.insert(name.to_owned(), serde_json::Value::String(time.to_string()));
        }
    }
    if notification.sequence != 0 {
        object.insert(
            "sequence".to_owned(),
            serde_json::Value::String(notification.sequence.to_string()),
        );
    }
    serde_json::Value::Object(object)
}

/// The body of one delivery: the proto3 JSON form of `WebhookPayload`.
pub fn payload_body(
    webhook_id: &str,
    notification: &Notification,
    attempt_number: i64,
    send_time_ms: i64,
) -> Vec<u8> {
    let body = serde_json::json!({
        "webhookId": webhook_id,
        "notification": notification_json(notification),
        "attemptNumber": attempt_number,
        "sendTime": timestamp_from_ms(send_time_ms).to_string(),
    });
    body.to_string().into_bytes()
}

/// The delay before attempt `attempt_number + 1`, with up to 10 % jitter;
/// `None` after the last attempt.
pub fn next_delay_ms(delays_ms: &[u64], attempt_number: i64) -> Option<i64> {
    let index = usize::try_from(attempt_number - 1).ok()?;
    let delay = i64::try_from(*delays_ms.get(index)?).ok()?;
    let jitter = rand::thread_rng().gen_range(0..=delay / 10);
    Some(delay + jitter)
}

/// The HTTP(S) client deliveries go through.
type DeliveryClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The delivery client: https through rustls (ring) trusting the system's
/// roots and the extra CA file, http where the URL check allowed it. An
/// unreadable CA file is logged and left out (deliveries to endpoints it
/// would vouch for then fail with a certificate error in the delivery log).
fn delivery_client(extra_ca_file: Option<&std::path::Path>) -> Result<DeliveryClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "a system certificate could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca_file {
        match extra_roots(path) {
            Ok(certificates) => {
                let (extra, ignored) = roots.add_parsable_certificates(certificates);
                if ignored > 0 || extra == 0 {
                    tracing::error!(path = %path.display(), extra, ignored, "webhook CA file: certificates not usable");
                }
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "webhook CA file unreadable");
            }
        }
    }
    tracing::debug!(system_roots = added, "webhook client trust store");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

fn extra_roots(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| error.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())
}

/// The delivery worker: attempts due deliveries, concurrently up to a
/// bound, until `shutdown`.
pub async fn run(inner: Arc<Inner>, shutdown: Shutdown) {
    let client = match delivery_client(inner.config.notification.webhook_extra_ca_file.as_deref()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook client TLS setup failed: no webhook is delivered");
            return;
        }
    };
    loop {
        let now = crate::now_ms();
        let jobs = match inner
            .store
            .due_webhook_jobs(now, CONCURRENT_DELIVERIES)
            .await
        {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "webhook jobs unreadable");
                Vec::new()
            }
        };
        if !jobs.is_empty() {
            let attempts = jobs.into_iter().map(|job| attempt(&inner, &client, job));
            futures::future::join_all(attempts).await;
            continue;
        }
        let next_due = inner.store.next_webhook_due().await.ok().flatten();
        let wait_ms = next_due.map_or(5_000, |due| (due - crate::now_ms()).clamp(1, 5_000));
        tokio::select! {
            () = inner.wake_webhooks.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))) => {}
            () = shutdown.wait() => return,
        }
    }
}

async fn attempt(inner: &Inner, client: &DeliveryClient, job: WebhookJob) {
    let config = &inner.config.notification;
    let attempt_time_ms = crate::now_ms();
    let mut record = DeliveryRecord {
        delivery_id: uuid::Uuid::now_v7().to_string(),
        webhook_id: job.webhook.webhook_id.clone(),
        notification_id: job.notification.notification_id.clone(),
        notification_type: job.notification.notification_type,
        attempt_number: job.attempt_number,
        attempt_time_ms,
        status_code: 0,
        error: String::new(),
        outcome: DeliveryOutcome::Failed as i32,
        next_retry_ms: None,
        latency_ms: 0,
        response_excerpt: String::new(),
    };
    if job.webhook.state != WebhookState::Enabled as i32 {
        record.error = "webhook not enabled; delivery dropped".to_owned();
        if let Err(error) = inner
            .store
            .record_attempt(&record, false, config.webhook_auto_disable_after_failures)
            .await
        {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "webhook attempt not recorded");
        }
        return;
    }
    let body = payload_body(
        &job.webhook.webhook_id,
        &job.notification,
        job.attempt_number,
        attempt_time_ms,
    );
    let timestamp_secs = attempt_time_ms / 1_000;
    let mut secrets = vec![job.webhook.secret.as_str()];
    if let (Some(previous), Some(expires)) = (
        &job.webhook.previous_secret,
        job.webhook.previous_secret_expires_ms,
    ) && expires > attempt_time_ms
    {
        secrets.push(previous.as_str());
    }
    let signature = signature_header(&secrets, timestamp_secs, &body);
    let request = hyper::Request::post(job.webhook.url.as_str())
        .header("content-type", "application/json")
        .header("auction-webhook-id", job.webhook.webhook_id.as_str())
        .header(
            "auction-event-id",
            job.notification.notification_id.as_str(),
        )
        .header("auction-delivery-attempt", job.attempt_number.to_string())
        .header("auction-signature", signature)
        .body(Full::new(Bytes::from(body)));
    let started = Instant::now();
    let timeout = Duration::from_millis(config.webhook_timeout_ms);
    let succeeded = match request {
        Err(error) => {
            record.error = format!("bad request: {error}");
            false
        }
        Ok(request) => match tokio::time::timeout(timeout, async {
            let response = client.request(request).await?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await
        {
            Err(_) => {
                record.error = format!("timeout after {}s", timeout.as_secs());
                false
            }
            Ok(Err(error)) => {
                record.error = format!(
                    "connection failed: {}",
                    auction_platform::error::DisplayChain(&error)
                );
                false
            }
            Ok(Ok((status, body))) => {
                record.status_code = i64::from(status.as_u16());
                record.response_excerpt =
                    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                if status.is_success() {
                    true
                } else {
                    record.error = format!("HTTP {}", status.as_u16());
                    false
                }
            }
        },
    };
    record.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    if succeeded {
        record.outcome = DeliveryOutcome::Succeeded as i32;
    } else if let Some(delay) = next_delay_ms(&config.webhook_retry_delays_ms, job.attempt_number) {
        record.outcome = DeliveryOutcome::Retrying as i32;
        record.next_retry_ms = Some(crate::now_ms() + delay);
    }
    tracing::debug!(webhook_id = %record.webhook_id, attempt = record.attempt_number, succeeded, "webhook attempt");
    if let Err(error) = inner
        .store
        .record_attempt(
            &record,
            succeeded,
            config.webhook_auto_disable_after_failures,
        )
        .await
    {
        tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "webhook attempt not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the signature is HMAC-SHA256 over "<t>.<body>" (RFC 4231 style
    // check against an independently computed value) and that the header
    // carries one v1 per secret.
    #[test]
    fn signature_matches_an_independent_hmac() {
        let body = br#"{"a":1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sign("whsec_test", 1_700_000_000, body), expected);
        let header = signature_header(&["whsec_test", "whsec_old"], 1_700_000_000, body);
        assert!(header.starts_with(&format!("t=1700000000,v1={expected},v1=")));
    }

    // Proves secrets have the documented shape.
    #[test]
    fn secrets_have_the_documented_shape() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret.len(), 6 + 43);
        assert_ne!(secret, generate_secret());
    }

    // Proves URL checks: https required in production, private addresses refused.
    #[tokio::test]
    async fn urls_are_checked() {
        assert!(
            validate_url("http://example.com/hook", false)
                .await
                .is_err()
        );
        assert!(validate_url("https://127.0.0.1/hook", false).await.is_err());
        assert!(validate_url("https://10.1.2.3/hook", false).await.is_err());
        assert!(validate_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(validate_url("ftp://example.com", true).await.is_err());
    }

    // Proves the retry schedule ends after the configured delays and jitter
    // stays within 10 %.
    #[test]
    fn retry_delays_have_bounded_jitter() {
        let delays = [1_000, 2_000];
        let first = next_delay_ms(&delays, 1).unwrap();
        assert!((1_000..=1_100).contains(&first));
        let second = next_delay_ms(&delays, 2).unwrap();
        assert!((2_000..=2_200).contains(&second));
        assert_eq!(next_delay_ms(&delays, 3), None);
    }
}
