//! grpc-web with a client that is not ours: `gateway/tests/grpc-web-node`
//! (@connectrpc/connect and its grpc-web transport, run by Node) against
//! `run_all` on port 0. Needs Node 20+ and npm; the first run installs the
//! client's packages into its gitignored `node_modules/` and generates its
//! code from `proto/` with buf.

use std::path::PathBuf;
use std::process::Command;

use auction_platform::auth::{AccessGrant, Keys, Role};
use auction_testkit::{Backend, spawn_app_with};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/grpc-web-node")
}

/// Runs `command`; its stdout, then its stderr after a line `--- stderr`.
fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|error| {
        panic!("{what}: cannot start ({error}); Node 20+ and npm are required")
    });
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// Proves a third-party grpc-web client can register, log in and make an
// authenticated call, and gets UNAUTHENTICATED for a forged or missing
// token and PERMISSION_DENIED for the wrong role.
#[tokio::test]
async fn connect_grpc_web_client_from_node() {
    let dir = client_dir();
    if !dir.join("node_modules/@connectrpc/connect-node").is_dir() {
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "npm install",
        );
    }
    run(
        Command::new("npx")
            .args(["buf", "generate"])
            .current_dir(&dir),
        "buf generate",
    );
    // A low API-key rate so a burst of eight calls trips it.
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.gateway.api_key_requests_per_second = 1;
        config.gateway.api_key_burst = 3;
    })
    .await;
    let url = app.url();
    // Tokens the client cannot make itself: one of ours that expired an hour
    // ago, and a well-formed one signed by a key the server does not know.
    let grant = AccessGrant {
        user_id: uuid::Uuid::now_v7(),
        session_id: Some(uuid::Uuid::now_v7()),
        roles: [Role::Bidder].into_iter().collect(),
        api_key: None,
        second_factor_verified: false,
    };
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let expired = app
        .keys
        .issue_access_token(&grant, now_ms - 2 * 3_600_000)
        .unwrap()
        .token;
    let wrong_key = Keys::generate(&app.config.auth)
        .issue_access_token(&grant, now_ms)
        .unwrap()
        .token;
    let stdout = tokio::task::spawn_blocking(move || {
        run(
            Command::new("node")
                .arg("client.mjs")
                .arg(url)
                .env("DEBUG_CLIENT", "1")
                .env("EXPIRED_TOKEN", expired)
                .env("WRONG_KEY_TOKEN", wrong_key)
                .current_dir(&dir),
            "node client.mjs",
        )
    })
    .await
    .unwrap();
    let (json, stderr) = stdout.split_once("--- stderr\n").expect("both outputs");
    let line = json.lines().last().expect("one JSON line");
    let seen: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(
        seen["registeredUserId"], seen["profileUserId"],
        "client saw: {stderr}"
    );
    assert!(
        seen["profileEmail"]
            .as_str()
            .unwrap()
            .ends_with("@test.auction.local")
    );
    assert_eq!(seen["forged"], "Unauthenticated");
    assert_eq!(seen["missing"], "Unauthenticated", "client saw: {stderr}");
    assert_eq!(seen["wrongRole"], "PermissionDenied");
    assert_eq!(seen["expired"], "Unauthenticated", "client saw: {stderr}");
    assert_eq!(seen["wrongKey"], "Unauthenticated", "client saw: {stderr}");
    assert_eq!(
        seen["refreshReused"], "Unauthenticated",
        "client saw: {stderr}"
    );
    assert_eq!(
        seen["rotatedAfterReuse"], "Unauthenticated",
        "the family is revoked"
    );
    assert_eq!(seen["apiKey"], "OK", "client saw: {stderr}");
    let burst: Vec<&str> = seen["apiKeyBurst"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    assert!(
        burst
            .iter()
            .all(|code| ["OK", "ResourceExhausted"].contains(code))
            && burst.contains(&"ResourceExhausted"),
        "a burst over 1/s (burst 3) trips the API-key limit: {burst:?}"
    );
    assert_eq!(
        seen["revokedApiKey"], "Unauthenticated",
        "client saw: {stderr}"
    );
    app.stop().await;
}
