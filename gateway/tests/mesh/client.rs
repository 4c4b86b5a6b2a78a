//! `auctiond`'s terminal client as processes against a real `auctiond dev`:
//! `auctions` lists the demo auctions, `bid` logs in with a demo account and
//! bids (or reports the precise refusal), and `watch` prints each bid as it
//! lands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A process killed when dropped, so a failing assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `auctiond dev` on a free port; returns it and its URL.
fn start_dev(data_dir: &std::path::Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn auctiond dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (Running(child), url)
}

/// Runs a client subcommand to completion.
fn client(arguments: &[&str], url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(arguments)
        .args(["--server", url])
        .env_remove("AUCTION_PASSWORD")
        .output()
        .expect("run the client")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Waits (bounded) for a line containing `needle`; returns it.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no line containing {needle:?} within 15 s; saw {seen:#?}"),
        }
    }
}

/// The bidder handle in `bid`'s output (`... as bidder-1234abcd (...`).
fn handle_in(output: &str) -> String {
    output
        .split_whitespace()
        .find(|word| word.starts_with("bidder-"))
        .unwrap_or_else(|| panic!("no bidder handle in {output:?}"))
        .to_owned()
}

// Proves a newcomer's three commands work against `auctiond dev`: the list
// shows the demo auctions, a bid below the minimum is refused with the
// reason and the minimum, straight and proxy bids land, and `watch` prints
// the snapshot and then each bid as it lands.
#[test]
fn list_bid_and_watch_against_dev() {
    let data = tempfile::tempdir().unwrap();
    let (_server, url) = start_dev(data.path());

    // The demo auctions are created while the server starts: ask until the
    // list shows them (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let listing = loop {
        let output = client(&["auctions"], &url);
        let stdout = text(&output.stdout);
        if output.status.success() && stdout.contains("Leica M6") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the demo auctions did not appear: {stdout} {}",
            text(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for title in ["Leica M6", "Lincoln cent", "ThinkPad", "Harbour at dawn"] {
        assert!(listing.contains(title), "{title} missing from:\n{listing}");
    }
    assert!(listing.contains("English") && listing.contains("Dutch") && listing.contains("sealed"));
    let auction_id = listing
        .lines()
        .find(|line| line.contains("Leica M6"))
        .and_then(|line| line.split_whitespace().next())
        .expect("the Leica line starts with its id")
        .to_owned();

    let mut watcher = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args(["watch", &auction_id, "--server", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn watch");
    let lines = lines_of(&mut watcher);
    let _watcher = Running(watcher);
    let mut seen = Vec::new();
    wait_for_line(&lines, "server clock: offset", &mut seen);
    let snapshot = wait_for_line(&lines, "Leica M6", &mut seen);
    assert!(
        snapshot.contains("(English, USD): OPEN") && snapshot.contains("sequence 1"),
        "{snapshot}"
    );

    // Below the starting price: refused, with the reason and the minimum.
    let refused = client(&["bid", &auction_id, "50.00", "--user", "bob"], &url);
    assert!(!refused.status.success());
    let error = text(&refused.stderr);
    assert!(error.contains("BID_BELOW_MINIMUM"), "{error}");
    assert!(
        error.contains("minimum acceptable bid: USD 100.00"),
        "{error}"
    );

    let placed = client(&["bid", &auction_id, "120.00", "--user", "bob"], &url);
    let stdout = text(&placed.stdout);
    assert!(placed.status.success(), "{stdout} {}", text(&placed.stderr));
    assert!(stdout.contains("bid accepted: 120.00 USD"), "{stdout}");
    assert!(stdout.contains("you lead"), "{stdout}");
    let bob = handle_in(&stdout);
    let landed = wait_for_line(&lines, &format!("by {bob}"), &mut seen);
    assert!(
        landed.contains(" BID ") && landed.contains(&format!("leader {bob}")),
        "{landed}"
    );

    // carol's maximum outbids bob by one increment; the watcher sees it.
    let maximum = client(
        &["bid", &auction_id, "200.00", "--user", "carol", "--max"],
        &url,
    );
    let stdout = text(&maximum.stdout);
    assert!(
        maximum.status.success(),
        "{stdout} {}",
        text(&maximum.stderr)
    );
    assert!(
        stdout.contains("maximum accepted") && stdout.contains("price USD 122.50"),
        "{stdout}"
    );
    let carol = handle_in(&stdout);
    assert_ne!(bob, carol);
    let landed = wait_for_line(&lines, &format!("leader {carol}"), &mut seen);
    assert!(landed.contains("price USD 122.50"), "{landed}");

    // A wrong password is a clear refusal, not a crash.
    let denied = Command::new(env!("CARGO_BIN_EXE_auctiond"))
        .args([
            "bid",
            &auction_id,
            "300.00",
            "--user",
            "bob",
            "--server",
            &url,
        ])
        .env("AUCTION_PASSWORD", "not-the-password")
        .output()
        .expect("run bid");
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("login as bob refused"),
        "{}",
        text(&denied.stderr)
    );
}
