//! Issue 7 over the real wire: accounts, tokens, refresh rotation, API
//! keys, roles, TOTP, brute-force throttling, rate limits and secret-free
//! logs, on SQLite and PostgreSQL.

use std::sync::{Arc, Mutex, OnceLock};

use auction_platform::auth::{Claims, Keys, Role};
use auction_platform::config::Config;
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_proto::v1::{
    ApiKeyScope, ConfirmTotpRequest, CreateApiKeyRequest, EnrollTotpRequest, GetProfileRequest,
    GetPublicKeysRequest, ListUsersRequest, LoginRequest, LogoutRequest, RefreshRequest,
    RevokeApiKeyRequest, SetRolesRequest, VerifySecondFactorRequest, login_response,
    verify_second_factor_request,
};
use auction_testkit::{Backend, TEST_PASSWORD, TestApp, spawn_app, spawn_with, with_token};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

fn request_id() -> String {
    Uuid::now_v7().to_string()
}

fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel().await)
}

fn config_for_test() -> (Config, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::embedded_default();
    config.server.listen_address = "127.0.0.1:0".to_owned();
    config.storage.data_dir = data.path().to_owned();
    config.media.local_dir = data.path().join("media");
    config.demo.seed_on_first_start = false;
    (config, data)
}

async fn register_login_and_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register_and_login("alice_a").await;
    let mut client = users(&app).await;
    let profile = client
        .get_profile(with_token(
            GetProfileRequest::default(),
            &alice.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        profile.public_profile.unwrap().user_id,
        alice.user_id.to_string()
    );
    assert_eq!(profile.private_profile.unwrap().email, alice.email);
    // Without a token, "me" is not known.
    let missing = client
        .get_profile(GetProfileRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(reason(&missing), "TOKEN_MISSING");
    // Public RPCs work without a token.
    let keys = client
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].algorithm, "EdDSA");
    // The same e-mail cannot register twice.
    let taken = client
        .register(auction_proto::v1::RegisterRequest {
            request_id: request_id(),
            email: alice.email.clone(),
            password: TEST_PASSWORD.to_owned(),
            handle: "alice_b".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&taken), "EMAIL_TAKEN");
    app.stop().await;
}

// Proves register, login and an authenticated call work on SQLite.
#[tokio::test]
async fn register_login_call_sqlite() {
    register_login_and_call(Backend::Sqlite).await;
}

// Proves register, login and an authenticated call work on PostgreSQL.
#[tokio::test]
async fn register_login_call_postgres() {
    register_login_and_call(Backend::Postgres).await;
}

// Proves expired, forged, wrong-key and malformed tokens get UNAUTHENTICATED
// with the contract's reasons, even on RPCs anyone may call.
#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = users(&app).await;
    let user_id = Uuid::now_v7();
    let now_s = now_ms() / 1_000;
    let expired = app
        .keys
        .sign_claims(&Claims {
            iss: "auction-mesh".to_owned(),
            aud: "auction-mesh".to_owned(),
            sub: user_id.to_string(),
            sid: None,
            roles: vec!["BIDDER".to_owned()],
            scope: None,
            akid: None,
            amr: vec!["pwd".to_owned()],
            svc: None,
            iat: now_s - 1_000,
            exp: now_s - 100,
        })
        .unwrap();
    let other_keys = Keys::generate(&app.config.auth);
    let wrong_key = other_keys
        .issue_access_token(
            &auction_platform::auth::AccessGrant {
                user_id,
                session_id: None,
                roles: [Role::Admin].into_iter().collect(),
                api_key: None,
                second_factor_verified: true,
            },
            now_ms(),
        )
        .unwrap()
        .token;
    let valid = app.access_token(user_id, &[Role::Bidder]);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = parts.join(".");
    for (token, expected) in [
        (expired.as_str(), "TOKEN_EXPIRED"),
        (wrong_key.as_str(), "TOKEN_INVALID"),
        (forged.as_str(), "TOKEN_INVALID"),
        ("not-a-jwt", "TOKEN_INVALID"),
    ] {
        let status = client
            .get_public_keys(with_token(GetPublicKeysRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{expected}");
        assert_eq!(reason(&status), expected);
    }
    app.stop().await;
}

// Proves the wrong role gets PERMISSION_DENIED, and that ADMIN without a
// second factor does not count.
#[tokio::test]
async fn wrong_role_is_permission_denied() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = users(&app).await;
    let bidder = app.access_token(Uuid::now_v7(), &[Role::Bidder, Role::Seller]);
    let denied = client
        .list_users(with_token(ListUsersRequest::default(), &bidder))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "ROLE_REQUIRED");
    let admin_without = app.access_token_without_second_factor(Uuid::now_v7(), &[Role::Admin]);
    let denied = client
        .list_users(with_token(ListUsersRequest::default(), &admin_without))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "SECOND_FACTOR_REQUIRED");
    let admin = app.access_token(Uuid::now_v7(), &[Role::Admin]);
    client
        .list_users(with_token(ListUsersRequest::default(), &admin))
        .await
        .unwrap();
    app.stop().await;
}

async fn refresh_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let bob = app.register_and_login("bob_r").await;
    let mut client = users(&app).await;
    let rotated = client
        .refresh(RefreshRequest {
            request_id: request_id(),
            refresh_token: bob.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(rotated.refresh_token, bob.refresh_token);
    // The spent token again: theft assumed.
    let reused = client
        .refresh(RefreshRequest {
            request_id: request_id(),
            refresh_token: bob.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    assert_eq!(reason(&reused), "REFRESH_TOKEN_REUSED");
    // The whole family is revoked: the newest token is dead too.
    let revoked = client
        .refresh(RefreshRequest {
            request_id: request_id(),
            refresh_token: rotated.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&revoked), "REFRESH_TOKEN_INVALID");
    // Logging out a revoked session succeeds and revokes nothing more.
    let logout = client
        .logout(LogoutRequest {
            request_id: request_id(),
            refresh_token: rotated.refresh_token,
            all_sessions: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logout.revoked_session_count, 0);
    app.stop().await;
}

// Proves refresh-token reuse revokes the whole family, on SQLite.
#[tokio::test]
async fn refresh_reuse_revokes_family_sqlite() {
    refresh_reuse(Backend::Sqlite).await;
}

// Proves refresh-token reuse revokes the whole family, on PostgreSQL.
#[tokio::test]
async fn refresh_reuse_revokes_family_postgres() {
    refresh_reuse(Backend::Postgres).await;
}

async fn api_key_until_revoked(backend: Backend) {
    let app = spawn_app(backend).await;
    let carol = app.register_and_login("carol_k").await;
    let mut client = users(&app).await;
    let created = client
        .create_api_key(with_token(
            CreateApiKeyRequest {
                request_id: request_id(),
                name: "partner".to_owned(),
                scopes: vec![ApiKeyScope::Read as i32, ApiKeyScope::Bid as i32],
                expire_time: None,
            },
            &carol.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret;
    let key_id = created.api_key.unwrap().api_key_id;
    let with_key = |message: GetProfileRequest| {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-api-key", secret.parse().unwrap());
        request
    };
    let me = client
        .get_profile(with_key(GetProfileRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        me.user.unwrap().public_profile.unwrap().user_id,
        carol.user_id.to_string()
    );
    // An API key cannot mint further keys.
    let refused = client
        .list_users({
            let mut request = tonic::Request::new(ListUsersRequest::default());
            request
                .metadata_mut()
                .insert("x-api-key", secret.parse().unwrap());
            request
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    client
        .revoke_api_key(with_token(
            RevokeApiKeyRequest {
                request_id: request_id(),
                api_key_id: key_id,
            },
            &carol.access_token,
        ))
        .await
        .unwrap();
    let revoked = client
        .get_profile(with_key(GetProfileRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(reason(&revoked), "API_KEY_INVALID");
    app.stop().await;
}

// Proves an API key authenticates and stops working the moment it is
// revoked, on SQLite.
#[tokio::test]
async fn api_key_until_revoked_sqlite() {
    api_key_until_revoked(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn api_key_until_revoked_postgres() {
    api_key_until_revoked(Backend::Postgres).await;
}

// Proves the per-user rate limit trips at the configured burst with
// RESOURCE_EXHAUSTED, reason RATE_LIMITED and a retry hint, and that another
// user is not affected.
#[tokio::test]
async fn rate_limit_trips() {
    let (mut config, data) = config_for_test();
    config.gateway.user_requests_per_second = 1;
    config.gateway.user_burst = 3;
    let app = spawn_with(config, data).await;
    let mut client = users(&app).await;
    let token = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    for _ in 0..3 {
        client
            .get_public_keys(with_token(GetPublicKeysRequest {}, &token))
            .await
            .unwrap();
    }
    let limited = client
        .get_public_keys(with_token(GetPublicKeysRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "RATE_LIMITED");
    let retry = tonic_types::StatusExt::get_details_retry_info(&limited).expect("a RetryInfo");
    assert!(retry.retry_delay.unwrap() > std::time::Duration::ZERO);
    let other = app.access_token(Uuid::now_v7(), &[Role::Bidder]);
    client
        .get_public_keys(with_token(GetPublicKeysRequest {}, &other))
        .await
        .unwrap();
    app.stop().await;
}

// Proves repeated failed logins for one account are refused with
// TOO_MANY_ATTEMPTS (even with the right password), and so are those from
// one source across accounts.
#[tokio::test]
async fn brute_force_is_blunted() {
    let (mut config, data) = config_for_test();
    config.auth.max_failed_logins_per_account = 3;
    config.auth.max_failed_logins_per_source = 6;
    let app = spawn_with(config, data).await;
    let dave = app.register_and_login("dave_b").await;
    let mut client = users(&app).await;
    let login = |email: &str, password: &str| LoginRequest {
        request_id: request_id(),
        email: email.to_owned(),
        password: password.to_owned(),
    };
    for _ in 0..3 {
        let wrong = client
            .login(login(&dave.email, "wrong password!"))
            .await
            .unwrap_err();
        assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    }
    let blocked = client
        .login(login(&dave.email, TEST_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(blocked.code(), Code::ResourceExhausted);
    assert_eq!(reason(&blocked), "TOO_MANY_ATTEMPTS");
    assert!(tonic_types::StatusExt::get_details_retry_info(&blocked).is_some());
    // Other accounts from the same source: three more failures reach the
    // per-source limit of six.
    for index in 0..3 {
        let wrong = client
            .login(login(
                &format!("nobody{index}@example.com"),
                "wrong password!",
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    }
    let blocked = client
        .login(login("someone.else@example.com", "whatever password"))
        .await
        .unwrap_err();
    assert_eq!(reason(&blocked), "TOO_MANY_ATTEMPTS");
    app.stop().await;
}

// Proves that behind a trusted proxy the per-source throttle keys on the
// client address the proxy forwarded (two clients behind one proxy are
// throttled apart), and that a client who is not a trusted proxy cannot
// choose its own address with x-forwarded-for.
#[tokio::test]
async fn throttle_keys_on_the_forwarded_client_behind_a_trusted_proxy() {
    let forwarded = |client: &str| {
        let mut request = tonic::Request::new(LoginRequest {
            request_id: request_id(),
            email: format!("nobody-{}@example.com", request_id()),
            password: "wrong password!".to_owned(),
        });
        request.metadata_mut().insert(
            "x-forwarded-for",
            format!("198.51.100.9, {client}").parse().unwrap(),
        );
        request
    };
    // Behind a trusted proxy (the test connects from 127.0.0.1).
    let (mut config, data) = config_for_test();
    config.auth.max_failed_logins_per_account = 100;
    config.auth.max_failed_logins_per_source = 2;
    config.server.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    let app = spawn_with(config, data).await;
    let mut client = users(&app).await;
    for _ in 0..2 {
        let wrong = client.login(forwarded("203.0.113.1")).await.unwrap_err();
        assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    }
    let blocked = client.login(forwarded("203.0.113.1")).await.unwrap_err();
    assert_eq!(reason(&blocked), "TOO_MANY_ATTEMPTS");
    // Another client behind the same proxy is not throttled by the first.
    let wrong = client.login(forwarded("203.0.113.2")).await.unwrap_err();
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    app.stop().await;

    // Without trust, the header is ignored: every attempt is 127.0.0.1's.
    let (mut config, data) = config_for_test();
    config.auth.max_failed_logins_per_account = 100;
    config.auth.max_failed_logins_per_source = 2;
    let app = spawn_with(config, data).await;
    let mut client = users(&app).await;
    for address in ["203.0.113.1", "203.0.113.2"] {
        let wrong = client.login(forwarded(address)).await.unwrap_err();
        assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    }
    let blocked = client.login(forwarded("203.0.113.3")).await.unwrap_err();
    assert_eq!(reason(&blocked), "TOO_MANY_ATTEMPTS");
    app.stop().await;
}

/// The code of `secret` for the step after the current one (accepted
/// within the one-step skew, and not yet used).
fn next_step_code(secret: &str) -> String {
    auction_user::secrets::totp_code(secret, now_ms() + 30_000).unwrap()
}

async fn totp_for_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    let erin = app.register_and_login("erin_admin").await;
    let mut client = users(&app).await;
    // A bootstrap admin (with a second factor) grants erin ADMIN.
    let root = app.access_token(Uuid::now_v7(), &[Role::Admin]);
    client
        .set_roles(with_token(
            SetRolesRequest {
                request_id: request_id(),
                user_id: erin.user_id.to_string(),
                roles: vec![auction_proto::v1::Role::Admin as i32],
            },
            &root,
        ))
        .await
        .unwrap();
    let password_login = || LoginRequest {
        request_id: request_id(),
        email: erin.email.clone(),
        password: TEST_PASSWORD.to_owned(),
    };
    let Some(login_response::Outcome::Tokens(tokens)) = client
        .login(password_login())
        .await
        .unwrap()
        .into_inner()
        .outcome
    else {
        panic!("tokens expected without TOTP");
    };
    // An admin without a second factor cannot act as admin.
    let denied = client
        .list_users(with_token(
            ListUsersRequest::default(),
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&denied), "SECOND_FACTOR_REQUIRED");
    // Enroll and confirm TOTP.
    let enrolled = client
        .enroll_totp(with_token(
            EnrollTotpRequest {
                request_id: request_id(),
                password: TEST_PASSWORD.to_owned(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = enrolled.secret_base32;
    let current = auction_user::secrets::totp_code(&secret, now_ms()).unwrap();
    let confirmed = client
        .confirm_totp(with_token(
            ConfirmTotpRequest {
                request_id: request_id(),
                totp_code: current.clone(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    // Login now asks for the second factor.
    let Some(login_response::Outcome::SecondFactorChallenge(challenge)) = client
        .login(password_login())
        .await
        .unwrap()
        .into_inner()
        .outcome
    else {
        panic!("a challenge expected with TOTP");
    };
    let verify =
        |code: verify_second_factor_request::Code, challenge_id: &str| VerifySecondFactorRequest {
            request_id: request_id(),
            challenge_id: challenge_id.to_owned(),
            code: Some(code),
        };
    // A wrong code is refused.
    let wrong = if current == "000000" {
        "111111"
    } else {
        "000000"
    };
    let refused = client
        .verify_second_factor(verify(
            verify_second_factor_request::Code::TotpCode(wrong.to_owned()),
            &challenge.challenge_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TOTP_INVALID");
    // The code already used to confirm is a replay: refused.
    let replayed = client
        .verify_second_factor(verify(
            verify_second_factor_request::Code::TotpCode(current),
            &challenge.challenge_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&replayed), "TOTP_INVALID");
    // A fresh code works, and the session acts as admin.
    let fresh = next_step_code(&secret);
    let verified = client
        .verify_second_factor(verify(
            verify_second_factor_request::Code::TotpCode(fresh.clone()),
            &challenge.challenge_id,
        ))
        .await
        .unwrap()
        .into_inner();
    let admin_token = verified.tokens.unwrap().access_token;
    client
        .list_users(with_token(ListUsersRequest::default(), &admin_token))
        .await
        .unwrap();
    // The same fresh code on a new challenge is a replay too.
    let Some(login_response::Outcome::SecondFactorChallenge(again)) = client
        .login(password_login())
        .await
        .unwrap()
        .into_inner()
        .outcome
    else {
        panic!("a challenge expected");
    };
    let replayed = client
        .verify_second_factor(verify(
            verify_second_factor_request::Code::TotpCode(fresh),
            &again.challenge_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&replayed), "TOTP_INVALID");
    // A recovery code works once.
    let recovery = confirmed.recovery_codes[0].clone();
    client
        .verify_second_factor(verify(
            verify_second_factor_request::Code::RecoveryCode(recovery),
            &again.challenge_id,
        ))
        .await
        .unwrap();
    app.stop().await;
}

// Proves on SQLite: an admin without a second factor cannot act as admin,
// and a wrong or replayed TOTP code is refused.
#[tokio::test]
async fn totp_for_admins_sqlite() {
    totp_for_admins(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn totp_for_admins_postgres() {
    totp_for_admins(Backend::Postgres).await;
}

#[derive(Clone, Default)]
struct SharedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> SharedLog {
    static LOG: OnceLock<SharedLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = SharedLog::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,h2=info,hyper=info",
            ))
            .json()
            .with_writer(move || writer.clone())
            .init();
        log
    })
    .clone()
}

// Proves a full session (register, failed and good logins, refresh and its
// replay, API key creation, its replay and use, TOTP enrollment and
// verification, logout) logs no password, token, API-key secret, TOTP
// secret or recovery code.
#[tokio::test]
async fn logs_hold_no_secrets() {
    let log = capture_logs();
    let app = spawn_app(Backend::Sqlite).await;
    let frank = app.register_and_login("frank_logs").await;
    let mut client = users(&app).await;
    let mut secrets = vec![
        TEST_PASSWORD.to_owned(),
        frank.access_token.clone(),
        frank.refresh_token.clone(),
    ];
    let wrong_password = "a wrong password 12345";
    secrets.push(wrong_password.to_owned());
    let _ = client
        .login(LoginRequest {
            request_id: request_id(),
            email: frank.email.clone(),
            password: wrong_password.to_owned(),
        })
        .await;
    let refresh_request = RefreshRequest {
        request_id: request_id(),
        refresh_token: frank.refresh_token.clone(),
    };
    let refreshed = client
        .refresh(refresh_request.clone())
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    secrets.push(refreshed.access_token.clone());
    secrets.push(refreshed.refresh_token.clone());
    // A replay unseals the stored secrets: they stay out of the logs too.
    let replayed = client
        .refresh(refresh_request)
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_eq!(replayed, refreshed);
    let key_request = CreateApiKeyRequest {
        request_id: request_id(),
        name: "logs".to_owned(),
        scopes: vec![ApiKeyScope::Read as i32],
        expire_time: None,
    };
    let key = client
        .create_api_key(with_token(key_request.clone(), &refreshed.access_token))
        .await
        .unwrap()
        .into_inner();
    secrets.push(key.secret.clone());
    let key_again = client
        .create_api_key(with_token(key_request, &refreshed.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key_again.secret, key.secret);
    let mut request = tonic::Request::new(GetProfileRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", key.secret.parse().unwrap());
    client.get_profile(request).await.unwrap();
    let enrolled = client
        .enroll_totp(with_token(
            EnrollTotpRequest {
                request_id: request_id(),
                password: TEST_PASSWORD.to_owned(),
            },
            &refreshed.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(enrolled.secret_base32.clone());
    let confirmed = client
        .confirm_totp(with_token(
            ConfirmTotpRequest {
                request_id: request_id(),
                totp_code: auction_user::secrets::totp_code(&enrolled.secret_base32, now_ms())
                    .unwrap(),
            },
            &refreshed.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.extend(confirmed.recovery_codes.iter().cloned());
    let Some(login_response::Outcome::SecondFactorChallenge(challenge)) = client
        .login(LoginRequest {
            request_id: request_id(),
            email: frank.email.clone(),
            password: TEST_PASSWORD.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
    else {
        panic!("a challenge expected");
    };
    let verified = client
        .verify_second_factor(VerifySecondFactorRequest {
            request_id: request_id(),
            challenge_id: challenge.challenge_id,
            code: Some(verify_second_factor_request::Code::TotpCode(
                next_step_code(&enrolled.secret_base32),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let tokens = verified.tokens.unwrap();
    secrets.push(tokens.access_token.clone());
    secrets.push(tokens.refresh_token.clone());
    client
        .logout(LogoutRequest {
            request_id: request_id(),
            refresh_token: tokens.refresh_token,
            all_sessions: false,
        })
        .await
        .unwrap();
    app.stop().await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("session opened"), "the capture works");
    assert!(
        text.contains(&frank.user_id.to_string()),
        "user ids are logged"
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
}
