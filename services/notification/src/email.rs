//! E-mail over SMTP (lettre): one template per notification type family,
//! plain text, sent by a worker that retries with the configured delays and
//! gives up after the last one. A recipient without a known address (the
//! user service publishes VERIFIED addresses as `user` bus events) is
//! retried the same way, then given up with the reason recorded.
//!
//! The same worker sends the transactional verification e-mails
//! (BusUserEmailVerificationRequested): to the address being verified,
//! whatever the preferences, never in the inbox, given up once the token
//! has expired; the token is blanked in the table once the e-mail is sent.
//!
//! Transport security (`notification.smtp.tls`): `none` is plain SMTP,
//! `starttls` upgrades before anything else is said (a relay without
//! STARTTLS is an error, never a fallback), `tls` is TLS from the first
//! byte. TLS is rustls on ring; the relay's certificate must chain to the
//! system's trust store or to `notification.smtp.extra_ca_file`, and name
//! `notification.smtp.host`.

use std::sync::Arc;
use std::time::Duration;

use auction_platform::Shutdown;
use auction_platform::config::{NotificationConfig, SmtpConfig, SmtpTls};
use auction_proto::v1::{Notification, NotificationType};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use crate::Inner;
use crate::store::{EmailJob, VerificationEmailJob};

/// E-mails sent per round.
const BATCH: u32 = 32;

/// The mailer of a configured relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Sends one plain-text message to `to`; the error says why not.
    async fn deliver(&self, to: &str, subject: String, text: String) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|error| format!("bad address: {error}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|error| format!("cannot build the message: {error}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| format!("smtp: {error}"))
    }

    /// A mailer for `smtp`, or why not.
    pub fn new(smtp: &SmtpConfig) -> Result<Self, String> {
        let from: Mailbox = smtp
            .from_address
            .parse()
            .map_err(|error| format!("notification.smtp.from_address: {error}"))?;
        let tls = match smtp.tls {
            SmtpTls::None => {
                // Checked by the configuration too; here again because
                // sending a password in clear is never acceptable.
                if smtp.username.is_some() || smtp.password.is_some() {
                    return Err("notification.smtp.tls: a relay login needs tls = \"starttls\" or \"tls\" (with \"none\" the credentials would cross the network in clear)".to_owned());
                }
                Tls::None
            }
            SmtpTls::Starttls => Tls::Required(tls_parameters(smtp)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(smtp)?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                .port(smtp.port)
                .tls(tls)
                .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
        if let (Some(username), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

/// The TLS settings of `smtp`: the system's roots plus the extra CA file,
/// for the relay's host name.
fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.extra_ca_file {
        let pem = std::fs::read(path).map_err(|error| {
            format!(
                "notification.smtp.extra_ca_file `{}`: {error}",
                path.display()
            )
        })?;
        let certificate = Certificate::from_pem(&pem).map_err(|error| {
            format!(
                "notification.smtp.extra_ca_file `{}`: {error}",
                path.display()
            )
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|error| format!("notification.smtp.tls: {error}"))
}

/// Subject and text of the verification e-mail: the link
/// `{web_base_url}/verify-email?token=...` and when it expires.
pub fn render_verification(job: &VerificationEmailJob, web_base_url: &str) -> (String, String) {
    let greeting = if job.display_name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {},", job.display_name)
    };
    // The token is base64url: nothing to escape in a query string.
    let link = format!(
        "{}/verify-email?token={}",
        web_base_url.trim_end_matches('/'),
        job.token
    );
    let expires = auction_platform::bus::timestamp_from_ms(job.expires_at_ms);
    let text = format!(
        "{greeting}\n\nPlease confirm that {} is your e-mail address by opening this link:\n\n{link}\n\nThe link works once and expires at {} UTC (seconds since 1970: {}).\nIf you did not create an account, ignore this e-mail.\n",
        job.email,
        rfc3339(expires.seconds),
        expires.seconds
    );
    ("Confirm your e-mail address".to_owned(), text)
}

/// `seconds` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC), without a
/// date library (days to civil date, H. Hinnant's algorithm).
fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// Subject and text of the e-mail for `notification`.
pub fn render(
    notification: &Notification,
    display_name: &str,
    web_base_url: &str,
) -> (String, String) {
    let greeting = if display_name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {display_name},")
    };
    let family = match NotificationType::try_from(notification.notification_type) {
        Ok(
            NotificationType::Outbid
            | NotificationType::EndingSoon
            | NotificationType::Extended
            | NotificationType::NewAuctionMatchingInterests
            | NotificationType::LiveSessionStarting,
        ) => "Open it to bid:",
        Ok(NotificationType::Won | NotificationType::Lost | NotificationType::ReserveNotMet) => {
            "See the result:"
        }
        Ok(
            NotificationType::OrderCreated
            | NotificationType::PaymentDue
            | NotificationType::Paid
            | NotificationType::Shipped
            | NotificationType::Released
            | NotificationType::DisputeUpdated
            | NotificationType::SecondChanceOffer
            | NotificationType::Refunded,
        ) => "Your order:",
        Ok(NotificationType::Unspecified) | Err(_) => "Details:",
    };
    let link = format!(
        "{}{}",
        web_base_url.trim_end_matches('/'),
        notification.action_path
    );
    let text = format!(
        "{greeting}\n\n{}\n\n{family} {link}\n\nYou receive this e-mail because of your notification preferences; change them in your account settings.\n",
        notification.body
    );
    (notification.title.clone(), text)
}

/// The e-mail worker: sends due e-mails until `shutdown`.
pub async fn run(inner: Arc<Inner>, mailer: Mailer, shutdown: Shutdown) {
    let config: &NotificationConfig = &inner.config.notification;
    loop {
        let now = crate::now_ms();
        let jobs = match inner.store.due_emails(now, BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "e-mail jobs unreadable");
                Vec::new()
            }
        };
        let verifications = match inner.store.due_verification_emails(now, BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "verification e-mails unreadable");
                Vec::new()
            }
        };
        let busy = !jobs.is_empty() || !verifications.is_empty();
        // Verification first: someone is waiting for that one.
        for job in verifications {
            send_verification(&inner, &mailer, config, job).await;
        }
        for job in jobs {
            send(&inner, &mailer, config, job).await;
        }
        if busy {
            continue;
        }
        let next_due = inner.store.next_email_due().await.ok().flatten();
        let wait_ms = next_due.map_or(5_000, |due| (due - crate::now_ms()).clamp(1, 5_000));
        tokio::select! {
            () = inner.wake_emails.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))) => {}
            () = shutdown.wait() => return,
        }
    }
}

async fn send_verification(
    inner: &Inner,
    mailer: &Mailer,
    config: &NotificationConfig,
    job: VerificationEmailJob,
) {
    let now = crate::now_ms();
    let (subject, text) = render_verification(&job, &config.web_base_url);
    let outcome = mailer.deliver(&job.email, subject, text).await;
    let (next_due, error) = match outcome {
        Ok(()) => (None, String::new()),
        Err(error) => {
            let attempt = usize::try_from(job.attempts).unwrap_or(usize::MAX);
            // Retried like notifications, but never past the token's life:
            // a link that can no longer work is not worth sending.
            let next = config
                .email_retry_delays_ms
                .get(attempt)
                .and_then(|delay| i64::try_from(*delay).ok())
                .map(|delay| now + delay)
                .filter(|due| *due < job.expires_at_ms);
            tracing::warn!(%error, event_id = %job.event_id, "verification e-mail not sent");
            (next, error)
        }
    };
    if let Err(error) = inner
        .store
        .record_verification_email(&job.event_id, now, next_due, &error)
        .await
    {
        tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "verification e-mail attempt not recorded");
    }
}

async fn send(inner: &Inner, mailer: &Mailer, config: &NotificationConfig, job: EmailJob) {
    let notification_id = job.notification.notification_id.clone();
    let now = crate::now_ms();
    let outcome = if job.email.is_empty() {
        Err("no e-mail address known for the user".to_owned())
    } else {
        let (subject, text) = render(&job.notification, &job.display_name, &config.web_base_url);
        mailer.deliver(&job.email, subject, text).await
    };
    // A missing address is retried too: the user service's contact event
    // may arrive after the notification (another topic, another consumer).
    let (next_due, error) = match outcome {
        Ok(()) => (None, String::new()),
        Err(error) => {
            let attempt = usize::try_from(job.attempts).unwrap_or(usize::MAX);
            let next = config
                .email_retry_delays_ms
                .get(attempt)
                .and_then(|delay| i64::try_from(*delay).ok())
                .map(|delay| now + delay);
            tracing::warn!(%error, %notification_id, "e-mail not sent");
            (next, error)
        }
    };
    if let Err(error) = inner
        .store
        .record_email(&notification_id, now, next_due, &error)
        .await
    {
        tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "e-mail attempt not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(tls: SmtpTls) -> SmtpConfig {
        SmtpConfig {
            host: "mail.example.test".to_owned(),
            port: 587,
            tls,
            extra_ca_file: None,
            from_address: "no-reply@auction.test".to_owned(),
            username: None,
            password: None,
            timeout_ms: 1_000,
        }
    }

    // Proves the mailer itself refuses a login over plain SMTP (whatever
    // the configuration check let through) and names an unreadable CA file,
    // while the TLS modes build without touching the network.
    #[test]
    fn mailer_settings_are_checked() {
        let mut plain = smtp(SmtpTls::None);
        plain.username = Some("mesh".to_owned());
        plain.password = Some(auction_platform::config::Secret::new("secret"));
        let error = Mailer::new(&plain).err().unwrap_or_default();
        assert!(error.contains("in clear"), "{error}");
        let mut missing_ca = smtp(SmtpTls::Starttls);
        missing_ca.extra_ca_file = Some("/nonexistent/ca.pem".into());
        let error = Mailer::new(&missing_ca).err().unwrap_or_default();
        assert!(error.contains("notification.smtp.extra_ca_file"), "{error}");
        assert!(Mailer::new(&smtp(SmtpTls::Starttls)).is_ok());
        assert!(Mailer::new(&smtp(SmtpTls::Tls)).is_ok());
        assert!(Mailer::new(&smtp(SmtpTls::None)).is_ok());
    }

    // Proves the verification e-mail carries the link with the token under
    // the configured base URL (one slash, whatever the base ends with) and
    // a readable expiry.
    #[test]
    fn verification_link() {
        let job = VerificationEmailJob {
            event_id: "e".to_owned(),
            email: "ann@example.test".to_owned(),
            display_name: "Ann".to_owned(),
            token: "amv_abc".to_owned(),
            expires_at_ms: 1_700_000_000_000,
            attempts: 0,
        };
        for base in ["https://auctions.example", "https://auctions.example/"] {
            let (subject, text) = render_verification(&job, base);
            assert_eq!(subject, "Confirm your e-mail address");
            assert!(
                text.contains("https://auctions.example/verify-email?token=amv_abc\n"),
                "{text}"
            );
            assert!(text.contains("Hello Ann,"), "{text}");
            assert!(text.contains("2023-11-14 22:13:20 UTC"), "{text}");
        }
    }
}
