//! Test helpers shared by every crate's integration tests.
//!
//! - [`spawn_app`] starts the whole mesh (the same [`auction_gateway::run_all`]
//!   that `auctiond` runs) on port 0, with its own SQLite folder or its own
//!   PostgreSQL database, and hands back its address and a way to stop it.
//! - [`TestApp::access_token`] signs an access token for any user id and
//!   roles with the app's own key, and [`TestApp::register_and_login`] goes
//!   through the real Register and Login RPCs; [`with_token`] attaches a
//!   token to a request.
//! - [`spawn_app_with`] does the same with an adjusted configuration;
//!   [`RedisServer`] runs a private `redis-server` a test may kill and
//!   restart; [`SmtpSink`] is a minimal SMTP server that keeps what it gets.
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

// ----- Issue 10: configured apps, a private Redis, an SMTP sink -----

/// Starts the mesh like [`spawn_app`], after `configure` has adjusted the
/// configuration (a Redis URL and stream prefix, SMTP, retry delays, ...).
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
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
    configure(&mut config);
    spawn_with(config, data).await
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A private `redis-server` that a test may kill and start again (same
/// port, same data folder, append-only file fsynced on every write, so
/// nothing acknowledged is lost across the restart).
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("redis data folder"),
            child: None,
        };
        server.launch().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server (is it installed?): {error}")
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.answers_ping().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers_ping(&self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut answer = [0_u8; 7];
        stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }

    /// Starts it again on the same port and data folder.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message received by an [`SmtpSink`].
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The raw message (headers and body) as sent after DATA.
    pub data: String,
}

/// A minimal SMTP server on 127.0.0.1 that accepts every message.
pub struct SmtpSink {
    /// Its port.
    pub port: u16,
    received: tokio::sync::mpsc::UnboundedReceiver<ReceivedMail>,
}

impl SmtpSink {
    /// Starts listening on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("address").port();
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(stream, sender).await;
                });
            }
        });
        Self { port, received }
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<ReceivedMail> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    sender: tokio::sync::mpsc::UnboundedSender<ReceivedMail>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    writer.write_all(b"220 sink ESMTP\r\n").await?;
    let mut mail = ReceivedMail {
        from: String::new(),
        to: Vec::new(),
        data: String::new(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            writer.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = command[10..].trim().trim_matches(['<', '>']).to_owned();
            writer.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to
                .push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            writer.write_all(b"250 ok\r\n").await?;
        } else if upper == "DATA" {
            writer.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            mail.data = data;
            let _ = sender.send(std::mem::replace(
                &mut mail,
                ReceivedMail {
                    from: String::new(),
                    to: Vec::new(),
                    data: String::new(),
                },
            ));
            writer.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            writer.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            writer.write_all(b"250 ok\r\n").await?;
        } else {
            writer.write_all(b"502 not implemented\r\n").await?;
        }
    }
}
