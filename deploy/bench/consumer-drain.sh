#!/usr/bin/env bash
# How far the bus consumers (notification, catalog, payment) fall behind a
# bid rush on the all-in-one server, and how long they take to catch up.
#
#   cargo build --release -p auction-gateway -p auction-loadgen
#   deploy/bench/consumer-drain.sh [BIN_DIR (default target/release)]
#
# Starts `auctiond dev` (SQLite) in a scratch folder, runs a closed-loop bid
# load over 1,000 auctions for DURATION_S seconds (default 10), then reads
# each consumer's `processed_events` count once a second until none moves;
# prints the counts at the end of the load and when the last one caught up.
# Needs the sqlite3 command-line shell.
set -euo pipefail
BIN=${1:-target/release}
DURATION_S=${DURATION_S:-10}
PORT=${PORT:-50071}
DATA=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
AUCTION_GATEWAY__USER_REQUESTS_PER_SECOND=1000000 AUCTION_GATEWAY__USER_BURST=1000000 \
AUCTION_GATEWAY__ANONYMOUS_REQUESTS_PER_SECOND=1000000 AUCTION_GATEWAY__ANONYMOUS_BURST=1000000 \
AUCTION_TELEMETRY__LOG_FILTER=warn AUCTION_DEMO__SEED_ON_FIRST_START=false \
  "$BIN/auctiond" dev --listen "127.0.0.1:$PORT" --data-dir "$DATA" > "$DATA.log" 2>&1 &
PID=$!
sleep 5
processed() { sqlite3 -readonly "file:$DATA/$1.db?mode=ro" "SELECT count(*) FROM processed_events" 2>/dev/null || echo "?"; }
counts() { echo "notification $(processed notification), catalog $(processed catalog), payment $(processed payment)"; }
"$BIN/auction-loadgen" bids --server "http://127.0.0.1:$PORT" --keys-dir "$DATA/keys" \
  --connections 4 --concurrency 256 --auctions 1000 --duration-s "$DURATION_S" | grep -E "ok in"
start=$(date +%s.%N)
echo "events processed at the end of the load: $(counts)"
previous=""
while true; do
  sleep 1
  now=$(counts)
  [ "$now" = "$previous" ] && break
  previous=$now
  caught_up=$(echo "$(date +%s.%N) - $start" | bc)
done
printf 'all caught up %.1f s after the load: %s\n' "$caught_up" "$previous"
