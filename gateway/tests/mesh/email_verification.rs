//! E-mail verification over the real wire, on SQLite and PostgreSQL: Register
//! mails a verification link (through the user outbox, the bus and the
//! notification service) to a local SMTP sink; the token from that mail
//! verifies the address through VerifyEmail; GetProfile then says
//! `email_verified`, and a later notification e-mail reaches the sink at the
//! verified address. Every refusal is checked with its status and reason:
//! malformed, unknown, used and expired tokens, a token for an address the
//! account no longer has, an address already verified, both rate limits
//! (with RetryInfo), and request-id replay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auction_platform::bus::{self, Envelope, TOPIC_AUCTION};
use auction_platform::config::{Config, SmtpConfig, SmtpTls};
use auction_proto::v1 as pb;
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_testkit::{
    Backend, ReceivedMail, SmtpSink, TestApp, TestUser, spawn_app_with, with_token,
};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// How long a test waits for an e-mail (events relayed, consumed, sent).
const WAIT: Duration = Duration::from_secs(30);
const REPLAY_TRAILER: &str = "auction-idempotent-replay";
const SUBJECT: &str = "Subject: Confirm your e-mail address";

fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The app with e-mail to `sink` and the verification settings `auth`.
async fn app_with(
    backend: Backend,
    sink: &SmtpSink,
    configure_auth: impl FnOnce(&mut Config) + Send + 'static,
) -> TestApp {
    let port = sink.port;
    spawn_app_with(backend, move |config: &mut Config| {
        config.notification.smtp = Some(SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            tls: SmtpTls::None,
            extra_ca_file: None,
            from_address: "Auctions <no-reply@auction.test>".to_owned(),
            username: None,
            password: None,
            timeout_ms: 5_000,
        });
        config.notification.web_base_url = "https://auctions.test/".to_owned();
        // The notification e-mail may be tried before the verified address
        // has been consumed: retry soon.
        config.notification.email_retry_delays_ms =
            vec![100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800];
        configure_auth(config);
    })
    .await
}

/// The message as a mail client shows it: quoted-printable (which lettre
/// picks for lines longer than 76 characters, such as the link) decoded.
fn body(mail: &ReceivedMail) -> String {
    let joined = mail.data.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'=')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The next verification mail in the sink, and its token.
async fn verification_mail(sink: &mut SmtpSink) -> (ReceivedMail, String) {
    let mail = sink
        .next_message(WAIT)
        .await
        .expect("a verification e-mail within the timeout");
    assert!(mail.data.contains(SUBJECT), "{}", mail.data);
    let text = body(&mail);
    let start = text
        .find("https://auctions.test/verify-email?token=")
        .unwrap_or_else(|| panic!("no link in {text}"))
        + "https://auctions.test/verify-email?token=".len();
    let token: String = text[start..]
        .chars()
        .take_while(|character| character.is_ascii_alphanumeric() || "_-".contains(*character))
        .collect();
    assert!(token.starts_with("amv_") && token.len() == 47, "{token}");
    (mail, token)
}

async fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel().await)
}

async fn request_verification(
    app: &TestApp,
    user: &TestUser,
    request_id: &str,
) -> Result<tonic::Response<pb::RequestEmailVerificationResponse>, tonic::Status> {
    users(app)
        .await
        .request_email_verification(with_token(
            pb::RequestEmailVerificationRequest {
                request_id: request_id.to_owned(),
            },
            &user.access_token,
        ))
        .await
}

async fn verify(app: &TestApp, token: &str) -> Result<pb::VerifyEmailResponse, tonic::Status> {
    users(app)
        .await
        .verify_email(pb::VerifyEmailRequest {
            token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn email_verified(app: &TestApp, user: &TestUser) -> bool {
    users(app)
        .await
        .get_profile(with_token(
            pb::GetProfileRequest::default(),
            &user.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .private_profile
        .unwrap()
        .email_verified
}

/// What the bidding service publishes when `outbid` loses the lead.
fn outbid(outbid: Uuid) -> Envelope {
    let auction_id = Uuid::now_v7().to_string();
    let leader = Uuid::now_v7().to_string();
    let event = pb::BusAuctionEvent {
        auction_id: auction_id.clone(),
        sequence: 1,
        event_time: Some(bus::timestamp_from_ms(now_ms())),
        seller_id: Uuid::now_v7().to_string(),
        title: "Lamp".to_owned(),
        kind: Some(pb::bus_auction_event::Kind::BidPlaced(
            pb::BusAuctionBidPlaced {
                bidder_id: leader.clone(),
                price: Some(pb::Money {
                    currency: "USD".to_owned(),
                    amount: "7.50".to_owned(),
                }),
                leader_id: leader,
                outbid_user_id: outbid.to_string(),
                reserve_met: true,
                ..pb::BusAuctionBidPlaced::default()
            },
        )),
    };
    Envelope::new("bidding", TOPIC_AUCTION, auction_id, now_ms(), &event)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::now_v7().simple().to_string()[20..])
}

async fn register_verify_notify(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    // No resend interval, two e-mails a day: Register's and one resend.
    let app = app_with(backend, &sink, |config| {
        config.auth.email_verification_resend_interval_ms = 0;
        config.auth.email_verifications_per_day = 2;
    })
    .await;
    let user = app.register_and_login(&unique("ver")).await;
    assert!(!email_verified(&app, &user).await);

    // Register mailed the first link to the account's address.
    let (first_mail, first_token) = verification_mail(&mut sink).await;
    assert_eq!(first_mail.to, vec![user.email.clone()]);
    assert_eq!(first_mail.from, "no-reply@auction.test");
    assert!(
        body(&first_mail).contains(&format!("Hello {}", user.email.split('@').next().unwrap()))
    );

    // A resend: answered, mailed once, replayed with the same answer.
    let resent = request_verification(&app, &user, "resend-1").await.unwrap();
    assert!(resent.metadata().get(REPLAY_TRAILER).is_none());
    let resent = resent.into_inner();
    assert_eq!(resent.email, user.email);
    let expire = resent.expire_time.unwrap();
    assert!(
        expire.seconds * 1_000 > now_ms() + 23 * 3_600_000,
        "{expire:?}"
    );
    let resend_after = resent.resend_after_time.unwrap();
    assert!(
        resend_after.seconds * 1_000 > now_ms() + 23 * 3_600_000,
        "the day is full: {resend_after:?}"
    );
    let (second_mail, second_token) = verification_mail(&mut sink).await;
    assert_eq!(second_mail.to, vec![user.email.clone()]);
    assert_ne!(first_token, second_token);
    let replayed = request_verification(&app, &user, "resend-1").await.unwrap();
    assert_eq!(
        replayed
            .metadata()
            .get(REPLAY_TRAILER)
            .map(|value| value.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(replayed.into_inner(), resent);

    // The day's two are spent: refused with when to try again.
    let limited = request_verification(&app, &user, "resend-2")
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "VERIFICATION_RATE_LIMITED");
    let retry = tonic_types::StatusExt::get_details_retry_info(&limited).expect("a RetryInfo");
    assert!(retry.retry_delay.unwrap() > Duration::from_secs(23 * 3_600));

    // Refusals of VerifyEmail before any success.
    let malformed = verify(&app, "not-a-token").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(reason(&malformed), "VALIDATION_FAILED");
    let malformed = verify(&app, &format!("{first_token}x")).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(reason(&malformed), "VALIDATION_FAILED");
    let unknown = verify(&app, &format!("amv_{}", "A".repeat(43)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "VERIFICATION_TOKEN_NOT_FOUND");

    // The first link verifies the address (no credentials needed).
    let verified = verify(&app, &first_token).await.unwrap();
    assert_eq!(verified.user_id, user.user_id.to_string());
    assert_eq!(verified.email, user.email);
    assert!(email_verified(&app, &user).await);

    // Used, and the other link retired with it.
    for token in [&first_token, &second_token] {
        let used = verify(&app, token).await.unwrap_err();
        assert_eq!(used.code(), Code::FailedPrecondition);
        assert_eq!(reason(&used), "VERIFICATION_TOKEN_USED");
    }

    // Nothing left to verify; the refusal is replayed for the same id.
    let done = request_verification(&app, &user, "resend-3")
        .await
        .unwrap_err();
    assert_eq!(done.code(), Code::FailedPrecondition);
    assert_eq!(reason(&done), "EMAIL_ALREADY_VERIFIED");
    let done_again = request_verification(&app, &user, "resend-3")
        .await
        .unwrap_err();
    assert_eq!(done_again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&done_again), "EMAIL_ALREADY_VERIFIED");
    assert_eq!(
        done_again
            .metadata()
            .get(REPLAY_TRAILER)
            .map(|value| value.to_str().unwrap()),
        Some("true")
    );

    // A notification e-mail now reaches the verified address. It is the
    // very next message: no verification e-mail was sent twice.
    let bus = bus::for_process(&app.config).unwrap();
    bus.publish(&[outbid(user.user_id)]).await.unwrap();
    let mail = sink
        .next_message(WAIT)
        .await
        .expect("a notification e-mail within the timeout");
    assert_eq!(mail.to, vec![user.email.clone()]);
    assert!(
        mail.data.contains("Subject: You have been outbid on Lamp"),
        "{}",
        mail.data
    );
    app.stop().await;
}

// Proves Register mails a verification link that VerifyEmail accepts once,
// after which GetProfile says verified and notification e-mail reaches the
// address; with every refusal on the way (SQLite).
#[tokio::test]
async fn register_verify_notify_sqlite() {
    register_verify_notify(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn register_verify_notify_postgres() {
    register_verify_notify(Backend::Postgres).await;
}

async fn expired_and_resend_interval(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    // Links live one second; the default resend interval (60 s).
    let app = app_with(backend, &sink, |config| {
        config.auth.email_verification_ttl_ms = 1_000;
    })
    .await;
    let user = app.register_and_login(&unique("exp")).await;
    let (mail, token) = verification_mail(&mut sink).await;

    // Register's mail was just sent: a resend must wait for the interval.
    let limited = request_verification(&app, &user, "too-soon")
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "VERIFICATION_RATE_LIMITED");
    let retry = tonic_types::StatusExt::get_details_retry_info(&limited)
        .expect("a RetryInfo")
        .retry_delay
        .unwrap();
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );

    // The mail states the expiry in seconds since 1970; wait until the
    // clock has passed it (a poll on the clock, whatever the load).
    let text = body(&mail);
    let marker = "seconds since 1970: ";
    let start = text.find(marker).unwrap() + marker.len();
    let expires_seconds: i64 = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while now_ms() <= (expires_seconds + 1) * 1_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not pass the expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = verify(&app, &token).await.unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert_eq!(reason(&expired), "VERIFICATION_EXPIRED");
    assert!(!email_verified(&app, &user).await);
    app.stop().await;
}

// Proves an expired link is refused with VERIFICATION_EXPIRED and verifies
// nothing, and that a resend within the interval is refused with a RetryInfo
// no longer than the interval (SQLite).
#[tokio::test]
async fn expired_and_resend_interval_sqlite() {
    expired_and_resend_interval(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn expired_and_resend_interval_postgres() {
    expired_and_resend_interval(Backend::Postgres).await;
}

/// Changes the account's e-mail behind the service's back, as a future
/// e-mail change would (the contract has no RPC for it yet).
async fn change_email_in_database(app: &TestApp, backend: Backend, user: &TestUser, email: &str) {
    let sql = "UPDATE users SET email = $1 WHERE id = $2";
    match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.config.storage.data_dir.join("users.db"))
                .busy_timeout(Duration::from_secs(5));
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let changed = sqlx::query(sql)
                .bind(email)
                .bind(user.user_id.to_string())
                .execute(&pool)
                .await
                .unwrap();
            assert_eq!(changed.rows_affected(), 1);
            pool.close().await;
        }
        Backend::Postgres => {
            let url = app.config.storage.postgres_url.as_ref().unwrap().expose();
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let pool = sqlx::PgPool::connect_with(options.options([("search_path", "users")]))
                .await
                .unwrap();
            let changed = sqlx::query(sql)
                .bind(email)
                .bind(user.user_id)
                .execute(&pool)
                .await
                .unwrap();
            assert_eq!(changed.rows_affected(), 1);
            pool.close().await;
        }
    }
}

async fn old_address_token_verifies_nothing(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    let app = app_with(backend, &sink, |_| {}).await;
    let user = app.register_and_login(&unique("mov")).await;
    let (_, token) = verification_mail(&mut sink).await;
    let moved = format!("moved_{}@test.auction.local", Uuid::now_v7().simple());
    change_email_in_database(&app, backend, &user, &moved).await;
    let refused = verify(&app, &token).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "VERIFICATION_EMAIL_CHANGED");
    assert!(!email_verified(&app, &user).await);
    app.stop().await;
}

// Proves a token mailed to the account's former address does not verify
// the address it has now (SQLite).
#[tokio::test]
async fn old_address_token_verifies_nothing_sqlite() {
    old_address_token_verifies_nothing(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn old_address_token_verifies_nothing_postgres() {
    old_address_token_verifies_nothing(Backend::Postgres).await;
}
