//! Test helpers shared by every crate's integration tests.
//!
//! - [`spawn_app`] starts the whole mesh (the same [`auction_gateway::run_all`]
//!   that `auctiond` runs) on port 0, with its own SQLite folder or its own
//!   PostgreSQL database, and hands back its address and a way to stop it.
//! - [`TestApp::access_token`] signs an access token for any user id and
//!   roles with the app's own key, and [`TestApp::register_and_login`] goes
//!   through the real Register and Login RPCs; [`with_token`] attaches a
//!   token to a request.
//! - [`postgres_url`], [`redis_url`], [`etcd_endpoints`] find the real test
//!   servers that `deploy/test.sh` starts; a missing server fails the test
//!   loudly (it is never skipped).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auction_platform::auth::{AccessGrant, Clock as _, Keys, Role, SystemClock};
use auction_platform::config::{Config, Secret, StorageBackend};
use auction_platform::{Shutdown, StartError};
use auction_proto::v1::user_service_client::UserServiceClient;
use auction_proto::v1::{LoginRequest, RegisterRequest, login_response};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Where the suite's PostgreSQL is, when `deploy/test.sh` did not say.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:54329/postgres";
/// Where the suite's Redis is, when `deploy/test.sh` did not say.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:63799";
/// Where the suite's etcd is, when `deploy/test.sh` did not say.
const DEFAULT_ETCD_ENDPOINTS: &str = "http://127.0.0.1:23799";

const HOW_TO_START: &str = "start the test servers with `deploy/local/backing-services.sh start` \
(or run the whole suite with `deploy/test.sh`)";

/// The PostgreSQL server of the suite (an administrative URL: tests create
/// their own databases in it).
pub fn postgres_url() -> String {
    std::env::var("MESH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// The Redis server of the suite.
pub fn redis_url() -> String {
    std::env::var("MESH_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// The etcd endpoints of the suite.
pub fn etcd_endpoints() -> Vec<String> {
    std::env::var("MESH_TEST_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| DEFAULT_ETCD_ENDPOINTS.to_owned())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Creates an empty PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin_url = postgres_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL at {admin_url} is not reachable ({error}); {HOW_TO_START}")
        });
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    admin.close().await.expect("close the admin connection");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a database URL ends with /database");
    format!("{base}/{name}")
}

/// Which database a spawned app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite folder (the embedded default).
    Sqlite,
    /// A fresh database on the suite's PostgreSQL.
    Postgres,
}

/// A running mesh on a free port.
pub struct TestApp {
    /// Where it listens.
    pub address: SocketAddr,
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// The same token keys the app loaded (generated into its data folder).
    pub keys: Arc<Keys>,
    shutdown: Shutdown,
    server: JoinHandle<Result<(), StartError>>,
    /// Keeps the SQLite folder alive as long as the app (and removes it after).
    _data: tempfile::TempDir,
}

/// Starts the mesh with `backend`, demo data off, on 127.0.0.1:0.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let data = tempfile::tempdir().expect("temporary data folder");
    let mut config = Config::embedded_default();
    config.server.listen_address = "127.0.0.1:0".to_owned();
    config.storage.data_dir = data.path().to_owned();
    config.media.local_dir = data.path().join("media");
    config.demo.seed_on_first_start = false;
    if backend == Backend::Postgres {
        config.storage.backend = StorageBackend::Postgres;
        config.storage.postgres_url = Some(Secret::new(fresh_postgres_database().await));
    }
    spawn_with(config, data).await
}

/// Starts the mesh with a prepared configuration; `data` is kept alive.
pub async fn spawn_with(config: Config, data: tempfile::TempDir) -> TestApp {
    config.validate().expect("test configuration is valid");
    // Generates the keys into the data folder (or reads configured ones);
    // the app loads the very same files when it starts.
    let keys = Arc::new(Keys::load(&config).expect("token keys"));
    let config = Arc::new(config);
    let listener = TcpListener::bind(config.listen_address().expect("address"))
        .await
        .expect("bind port 0");
    let address = listener.local_addr().expect("bound address");
    let shutdown = Shutdown::new();
    let server = tokio::spawn(auction_gateway::run_all(
        Arc::clone(&config),
        listener,
        shutdown.clone(),
    ));
    TestApp {
        address,
        config,
        keys,
        shutdown,
        server,
        _data: data,
    }
}

impl TestApp {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A gRPC channel to the app. The listener was bound before the server
    /// task started, so the connection is accepted as soon as it serves.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .expect("valid URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()))
    }

    /// A valid access token for `user_id` holding `roles`, signed with the
    /// app's key, from a session that passed a second factor (so ADMIN
    /// counts). The user need not exist in the user service.
    pub fn access_token(&self, user_id: uuid::Uuid, roles: &[Role]) -> String {
        self.token_for(user_id, roles, true)
    }

    /// Like [`Self::access_token`], but from a session without a second
    /// factor (ADMIN then does not count).
    pub fn access_token_without_second_factor(
        &self,
        user_id: uuid::Uuid,
        roles: &[Role],
    ) -> String {
        self.token_for(user_id, roles, false)
    }

    fn token_for(
        &self,
        user_id: uuid::Uuid,
        roles: &[Role],
        second_factor_verified: bool,
    ) -> String {
        let grant = AccessGrant {
            user_id,
            session_id: Some(uuid::Uuid::now_v7()),
            roles: roles.iter().copied().collect(),
            api_key: None,
            second_factor_verified,
        };
        self.keys
            .issue_access_token(&grant, SystemClock.now_ms())
            .expect("sign a test token")
            .token
    }

    /// A service token for `service` (e.g. `catalog`), as one service of
    /// the mesh would send another.
    pub fn service_token(&self, service: &str) -> String {
        self.keys
            .issue_service_token(service, SystemClock.now_ms())
            .expect("sign a service token")
            .token
    }

    /// Registers a fresh account through the real Register RPC (handle
    /// `handle`, e-mail `<handle>@test.auction.local`, password
    /// [`TEST_PASSWORD`]), then logs in through Login.
    pub async fn register_and_login(&self, handle: &str) -> TestUser {
        let mut users = UserServiceClient::new(self.channel().await);
        let email = format!("{handle}@test.auction.local");
        let registered = users
            .register(RegisterRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                email: email.clone(),
                password: TEST_PASSWORD.to_owned(),
                handle: handle.to_owned(),
                display_name: handle.to_owned(),
                ..RegisterRequest::default()
            })
            .await
            .unwrap_or_else(|status| panic!("register {handle}: {status:?}"))
            .into_inner();
        let user_id = registered
            .user
            .and_then(|user| user.public_profile)
            .map(|profile| profile.user_id)
            .expect("a registered user")
            .parse()
            .expect("a UUID user id");
        let login = users
            .login(LoginRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                email: email.clone(),
                password: TEST_PASSWORD.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("login {handle}: {status:?}"))
            .into_inner();
        let Some(login_response::Outcome::Tokens(tokens)) = login.outcome else {
            panic!("login of {handle} returned no tokens");
        };
        TestUser {
            user_id,
            email,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        }
    }

    /// Triggers shutdown and waits for the server to drain and stop.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.trigger();
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the app stops within 10 s")
            .expect("the server task did not panic");
        outcome.expect("the app stopped cleanly");
        self._data
    }
}

/// The password of accounts made by [`TestApp::register_and_login`].
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// An account created through the real RPCs, with its first session.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Its id.
    pub user_id: uuid::Uuid,
    /// Its login e-mail.
    pub email: String,
    /// A valid access token.
    pub access_token: String,
    /// The session's refresh token.
    pub refresh_token: String,
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a token is a header value"),
    );
    request
}
