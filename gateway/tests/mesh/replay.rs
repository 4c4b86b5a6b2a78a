//! Issue 7 over the real wire: request_id replay in the user service. A
//! retried Register answers with the same account, a retried Refresh with
//! the same pair (and the family keeps working), a reused retired token
//! under another request id still revokes the family, the same id with
//! other content is ALREADY_EXISTS, a retried CreateApiKey returns the
//! same working secret; on SQLite and PostgreSQL.

use auction_proto::v1::user_service_client::UserServiceClient;
use auction_proto::v1::{
    ApiKeyScope, AuthTokens, CreateApiKeyRequest, GetProfileRequest, ListApiKeysRequest,
    RefreshRequest, RegisterRequest, UpdateProfileRequest,
};
use auction_testkit::{Backend, TEST_PASSWORD, TestApp, spawn_app, with_token};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const REPLAY_TRAILER: &str = "auction-idempotent-replay";

fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("auction-error-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn replayed<T>(response: &tonic::Response<T>) -> bool {
    response
        .metadata()
        .get(REPLAY_TRAILER)
        .is_some_and(|value| value == "true")
}

async fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel().await)
}

async fn refresh(
    client: &mut UserServiceClient<Channel>,
    request_id: &str,
    token: &str,
) -> Result<tonic::Response<auction_proto::v1::RefreshResponse>, tonic::Status> {
    client
        .refresh(RefreshRequest {
            request_id: request_id.to_owned(),
            refresh_token: token.to_owned(),
        })
        .await
}

fn tokens(response: tonic::Response<auction_proto::v1::RefreshResponse>) -> AuthTokens {
    response.into_inner().tokens.unwrap()
}

async fn register_replays(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = users(&app).await;
    let request = RegisterRequest {
        request_id: Uuid::now_v7().to_string(),
        email: "rita@test.auction.local".to_owned(),
        password: TEST_PASSWORD.to_owned(),
        handle: "rita_replay".to_owned(),
        display_name: "Rita".to_owned(),
        ..RegisterRequest::default()
    };
    let first = client.register(request.clone()).await.unwrap();
    assert!(!replayed(&first));
    // The response was lost; the client retries the very same request.
    let again = client.register(request.clone()).await.unwrap();
    assert!(replayed(&again), "a replay carries the trailer");
    let (first, again) = (first.into_inner(), again.into_inner());
    let user_id = |response: &auction_proto::v1::RegisterResponse| {
        response
            .user
            .clone()
            .unwrap()
            .public_profile
            .unwrap()
            .user_id
    };
    assert_eq!(user_id(&first), user_id(&again), "the same account");
    assert_eq!(first.tokens, again.tokens, "the same session and tokens");
    // The replayed tokens are real: the access token authenticates and the
    // refresh token rotates.
    let tokens = again.tokens.unwrap();
    client
        .get_profile(with_token(
            GetProfileRequest::default(),
            &tokens.access_token,
        ))
        .await
        .unwrap();
    refresh(
        &mut client,
        &Uuid::now_v7().to_string(),
        &tokens.refresh_token,
    )
    .await
    .unwrap();
    // The same request id with other content is refused.
    let reused = client
        .register(RegisterRequest {
            handle: "rita_other".to_owned(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    // A new request id for the same e-mail is a second registration.
    let taken = client
        .register(RegisterRequest {
            request_id: Uuid::now_v7().to_string(),
            handle: "rita_third".to_owned(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&taken), "EMAIL_TAKEN");
    app.stop().await;
}

// Proves a retried Register returns the original account and working
// tokens on SQLite, and that other content under its id is refused.
#[tokio::test]
async fn register_replays_sqlite() {
    register_replays(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn register_replays_postgres() {
    register_replays(Backend::Postgres).await;
}

async fn refresh_replays(backend: Backend) {
    let app = spawn_app(backend).await;
    let rex = app.register_and_login("rex_replay").await;
    let mut client = users(&app).await;
    let request_id = Uuid::now_v7().to_string();
    // Two copies at once (a client retrying on a timeout while the first
    // is still in flight) and one later: all get the same pair.
    let mut other = users(&app).await;
    let (first, concurrent) = tokio::join!(
        refresh(&mut client, &request_id, &rex.refresh_token),
        refresh(&mut other, &request_id, &rex.refresh_token),
    );
    let (first, concurrent) = (first.unwrap(), concurrent.unwrap());
    assert!(
        replayed(&first) != replayed(&concurrent),
        "exactly one executed"
    );
    let (first, concurrent) = (tokens(first), tokens(concurrent));
    assert_eq!(first, concurrent);
    let retried = refresh(&mut client, &request_id, &rex.refresh_token)
        .await
        .unwrap();
    assert!(replayed(&retried));
    assert_eq!(tokens(retried), first, "the same new pair");
    assert_ne!(first.refresh_token, rex.refresh_token);
    // The family still works: the new token rotates as usual.
    let next = tokens(
        refresh(
            &mut client,
            &Uuid::now_v7().to_string(),
            &first.refresh_token,
        )
        .await
        .unwrap(),
    );
    client
        .get_profile(with_token(GetProfileRequest::default(), &next.access_token))
        .await
        .unwrap();
    // The retired token under ANOTHER request id is a reuse: theft assumed,
    // the whole family goes.
    let reused = refresh(&mut client, &Uuid::now_v7().to_string(), &rex.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    assert_eq!(reason(&reused), "REFRESH_TOKEN_REUSED");
    let revoked = refresh(
        &mut client,
        &Uuid::now_v7().to_string(),
        &next.refresh_token,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&revoked), "REFRESH_TOKEN_INVALID");
    app.stop().await;
}

// Proves a retried Refresh (same request id, same old token) gets the same
// pair without tripping reuse detection, even when the copies race, and
// that reuse under another request id still revokes the family (SQLite).
#[tokio::test]
async fn refresh_replays_sqlite() {
    refresh_replays(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn refresh_replays_postgres() {
    refresh_replays(Backend::Postgres).await;
}

async fn api_key_replays(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.register_and_login("kim_replay").await;
    let mut client = users(&app).await;
    let request = CreateApiKeyRequest {
        request_id: Uuid::now_v7().to_string(),
        name: "partner".to_owned(),
        scopes: vec![ApiKeyScope::Read as i32],
        expire_time: None,
    };
    let first = client
        .create_api_key(with_token(request.clone(), &kim.access_token))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_api_key(with_token(request.clone(), &kim.access_token))
        .await
        .unwrap();
    assert!(replayed(&again));
    let again = again.into_inner();
    assert_eq!(again.secret, first.secret, "the same secret");
    assert_eq!(again.api_key, first.api_key);
    // One key exists, and the replayed secret authenticates.
    let listed = client
        .list_api_keys(with_token(ListApiKeysRequest::default(), &kim.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    let mut with_key = tonic::Request::new(GetProfileRequest::default());
    with_key
        .metadata_mut()
        .insert("x-api-key", again.secret.parse().unwrap());
    let me = client.get_profile(with_key).await.unwrap().into_inner();
    assert_eq!(
        me.user.unwrap().public_profile.unwrap().user_id,
        kim.user_id.to_string()
    );
    let reused = client
        .create_api_key(with_token(
            CreateApiKeyRequest {
                name: "another".to_owned(),
                ..request
            },
            &kim.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    app.stop().await;
}

// Proves a retried CreateApiKey returns the same secret, which works, and
// creates one key only (SQLite).
#[tokio::test]
async fn api_key_replays_sqlite() {
    api_key_replays(Backend::Sqlite).await;
}

// Proves the same on PostgreSQL.
#[tokio::test]
async fn api_key_replays_postgres() {
    api_key_replays(Backend::Postgres).await;
}

// Proves refusals are replayed too: a handle clash under one request id
// stays that refusal on retry even after the handle is freed, and a new
// request id executes afresh.
#[tokio::test]
async fn refusals_replay() {
    let app = spawn_app(Backend::Sqlite).await;
    let first = app.register_and_login("taken_handle").await;
    let second = app.register_and_login("second_user").await;
    let mut client = users(&app).await;
    let update = |request_id: &str, handle: &str| UpdateProfileRequest {
        request_id: request_id.to_owned(),
        profile: Some(auction_proto::v1::ProfileUpdate {
            handle: handle.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["handle".to_owned()],
        }),
    };
    let clash = client
        .update_profile(with_token(
            update("clash", "taken_handle"),
            &second.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&clash), "HANDLE_TAKEN");
    client
        .update_profile(with_token(
            update(&Uuid::now_v7().to_string(), "freed_handle"),
            &first.access_token,
        ))
        .await
        .unwrap();
    let retried = client
        .update_profile(with_token(
            update("clash", "taken_handle"),
            &second.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&retried), "HANDLE_TAKEN");
    assert!(
        retried
            .metadata()
            .get(REPLAY_TRAILER)
            .is_some_and(|value| value == "true")
    );
    let fresh = client
        .update_profile(with_token(
            update(&Uuid::now_v7().to_string(), "taken_handle"),
            &second.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fresh.user.unwrap().public_profile.unwrap().handle,
        "taken_handle"
    );
    app.stop().await;
}
