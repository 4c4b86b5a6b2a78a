#!/usr/bin/env bash
# A real bidding cluster on one machine, every part its own process on
# loopback: PostgreSQL, Redis and etcd (deploy/local/backing-services.sh),
# three bidding nodes (`auction-bidding`) electing shard leaders through etcd,
# and a gateway (`auctiond serve`) that runs the other services and forwards
# bidding calls to the nodes (a node forwards to the shard's leader).
#
#   deploy/local/cluster.sh start    # builds (release) if needed, starts, waits until every shard is led
#   deploy/local/cluster.sh status   # nodes, shard leaders per node
#   deploy/local/cluster.sh kill N   # SIGKILL bidding node N (0-2), to watch a failover
#   deploy/local/cluster.sh restart N
#   deploy/local/cluster.sh stop     # stops the nodes and the gateway (the backing services keep running)
#
# CLUSTER_BUILD=0 uses the binaries in target/release as they are.
# The gateway listens on 127.0.0.1:${CLUSTER_GATEWAY_PORT:-50100}; nodes on the
# next three ports. State lives in .tmp/cluster (database `cluster` on the
# test PostgreSQL, etcd prefix /auction/cluster). Keys for the load generator:
# --keys-dir .tmp/cluster/keys.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

dir="$root/.tmp/cluster"
profile=${CLUSTER_PROFILE:-release}
bin="$root/target/$profile"
gateway_port=${CLUSTER_GATEWAY_PORT:-50100}
nodes=3
shards=${CLUSTER_SHARDS:-64}
prefix=/auction/cluster

node_port() { echo $((gateway_port + 1 + $1)); }

backing_env() {
  deploy/local/backing-services.sh start >/dev/null 2>&1
  eval "$(deploy/local/backing-services.sh env)"
  postgres_admin=$MESH_TEST_POSTGRES_URL
  postgres_url="${MESH_TEST_POSTGRES_URL%/*}/cluster"
  redis_url=$MESH_TEST_REDIS_URL
  etcd_endpoint=${MESH_TEST_ETCD_ENDPOINTS%%,*}
}

build() {
  [ "${CLUSTER_BUILD:-1}" = 0 ] && return 0
  local flag=()
  [ "$profile" = release ] && flag=(--release)
  cargo build "${flag[@]}" --quiet -p auction-bidding -p auction-gateway
}

keys() {
  mkdir -p "$dir/keys"
  for name in token-signing-ed25519.pem service-ed25519.pem; do
    [ -f "$dir/keys/$name" ] || openssl genpkey -algorithm ed25519 -out "$dir/keys/$name" 2>/dev/null
  done
}

common_config() {
  cat <<EOF
[telemetry]
log_format = "text"
log_filter = "info"
[storage]
backend = "postgres"
postgres_url = "$postgres_url"
[redis]
url = "$redis_url"
[etcd]
endpoints = ["$etcd_endpoint"]
key_prefix = "$prefix"
[auth]
signing_key_file = "$dir/keys/token-signing-ed25519.pem"
service_key_file = "$dir/keys/service-ed25519.pem"
EOF
}

write_configs() {
  local upstreams=""
  for n in $(seq 0 $((nodes - 1))); do
    {
      echo "[server]"
      echo "listen_address = \"127.0.0.1:$(node_port "$n")\""
      common_config
      echo "[bidding]"
      echo "shard_count = $shards"
      echo "node_id = \"bidding-$n\""
    } >"$dir/bidding-$n.toml"
    upstreams+="\"http://127.0.0.1:$(node_port "$n")\", "
  done
  {
    echo "[server]"
    echo "listen_address = \"127.0.0.1:$gateway_port\""
    common_config
    echo "[bidding]"
    echo "shard_count = $shards"
    echo "[gateway]"
    echo "user_requests_per_second = 1000000"
    echo "user_burst = 1000000"
    echo "anonymous_requests_per_second = 1000000"
    echo "anonymous_burst = 1000000"
    echo "[gateway.upstreams]"
    echo "\"auction.v1.BiddingService\" = [${upstreams%, }]"
  } >"$dir/gateway.toml"
}

start_node() {
  local n=$1
  "$bin/auction-bidding" --config "$dir/bidding-$n.toml" >>"$dir/bidding-$n.log" 2>&1 &
  echo $! >"$dir/bidding-$n.pid"
}

stop_pid() {
  local file=$1 signal=${2:-TERM}
  [ -f "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

leaders() {
  etcdctl_bin=$(command -v etcdctl || echo "$root/.tmp/etcd/etcdctl")
  ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$etcd_endpoint" get --prefix "$prefix/leaders/" --print-value-only 2>/dev/null |
    grep -v '^http' || true
}

wait_led() {
  for _ in $(seq 1 150); do
    if [ "$(leaders | wc -l)" -ge "$shards" ]; then return 0; fi
    sleep 0.2
  done
  echo "[cluster] not every shard is led after 30 s; see $dir/*.log" >&2
  return 1
}

case "${1:-}" in
start)
  mkdir -p "$dir"
  backing_env
  build
  keys
  psql "$postgres_admin" -qAtc "SELECT 1 FROM pg_database WHERE datname = 'cluster'" | grep -q 1 ||
    psql "$postgres_admin" -qc "CREATE DATABASE cluster"
  write_configs
  for n in $(seq 0 $((nodes - 1))); do start_node "$n"; done
  "$bin/auctiond" serve --config "$dir/gateway.toml" >>"$dir/gateway.log" 2>&1 &
  echo $! >"$dir/gateway.pid"
  wait_led
  echo "[cluster] gateway http://127.0.0.1:$gateway_port; bidding nodes on ports $(node_port 0)-$(node_port $((nodes - 1))); $shards shards led"
  ;;
status)
  backing_env
  for n in $(seq 0 $((nodes - 1))); do
    state=down
    [ -f "$dir/bidding-$n.pid" ] && kill -0 "$(cat "$dir/bidding-$n.pid")" 2>/dev/null && state=up
    echo "bidding-$n $state leads $(leaders | grep -cx "bidding-$n") shards"
  done
  ;;
kill)
  stop_pid "$dir/bidding-${2:?node number}.pid" KILL
  ;;
restart)
  backing_env
  stop_pid "$dir/bidding-${2:?node number}.pid"
  start_node "$2"
  ;;
stop)
  stop_pid "$dir/gateway.pid"
  for n in $(seq 0 $((nodes - 1))); do stop_pid "$dir/bidding-$n.pid"; done
  ;;
*)
  sed -n '2,18p' "$0"
  exit 2
  ;;
esac
