//! grpc-web with a client that is not ours: `gateway/tests/grpc-web-node`
//! (@connectrpc/connect and its grpc-web transport, run by Node) against
//! `run_all` on port 0. Needs Node 20+ and npm; the first run installs the
//! client's packages into its gitignored `node_modules/` and generates its
//! code from `proto/` with buf.

use std::path::PathBuf;
use std::process::Command;

use auction_testkit::{Backend, spawn_app};

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
    let app = spawn_app(Backend::Sqlite).await;
    let url = app.url();
    let stdout = tokio::task::spawn_blocking(move || {
        run(
            Command::new("node")
                .arg("client.mjs")
                .arg(url)
                .env("DEBUG_CLIENT", "1")
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
    app.stop().await;
}
