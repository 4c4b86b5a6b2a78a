#!/usr/bin/env bash
# Starts (or finds already running) the real PostgreSQL, Redis and etcd that
# the test suite and the local cluster use, each private to this checkout, on
# loopback ports of their own. Installs the Debian packages when missing.
#
#   deploy/local/backing-services.sh start   # install if needed, start, wait until ready
#   deploy/local/backing-services.sh stop    # stop what this script started
#   deploy/local/backing-services.sh env     # print the MESH_TEST_* exports
#
# Ports can be moved with MESH_PG_PORT, MESH_REDIS_PORT, MESH_ETCD_PORT.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state="$root/.tmp/backing"
pg_port=${MESH_PG_PORT:-54329}
redis_port=${MESH_REDIS_PORT:-63799}
etcd_port=${MESH_ETCD_PORT:-23799}
etcd_peer_port=$((etcd_port + 10))
pg_cluster=auction_test

log() { printf '[backing] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) to run: $*"; exit 1; fi
}

install_missing() {
  local packages=()
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql postgresql-client)
  command -v pg_createcluster >/dev/null || packages+=(postgresql-common)
  command -v redis-server >/dev/null || packages+=(redis-server)
  command -v etcd >/dev/null || packages+=(etcd-server)
  command -v etcdctl >/dev/null || packages+=(etcd-client)
  if [ ${#packages[@]} -gt 0 ]; then
    log "installing ${packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

wait_for() { # $1 = what, $2.. = command that succeeds when ready
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what did not become ready"; exit 1
}

pg_version() { ls /usr/lib/postgresql | sort -n | tail -n 1; }

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p "$pg_port"; then log "PostgreSQL already answers on $pg_port"; return; fi
  local version; version=$(pg_version)
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx "$pg_cluster"; then
    log "creating PostgreSQL $version cluster $pg_cluster on port $pg_port"
    # trust on loopback: a private test cluster, reachable only from here.
    as_root pg_createcluster "$version" "$pg_cluster" -p "$pg_port" \
      -- --auth-host=trust --auth-local=trust >/dev/null
    # conf.d is included by the generated postgresql.conf; later settings win.
    # shared_buffers: 2 GB of this 24 GiB machine (the usual advice is a
    # quarter of RAM on a dedicated server), so the 1-million-listing search
    # benchmark's table and index stay in PostgreSQL's own cache.
    printf "listen_addresses = '127.0.0.1'\nmax_connections = 400\nshared_buffers = 2GB\n" |
      as_root tee "/etc/postgresql/$version/$pg_cluster/conf.d/auction.conf" >/dev/null
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$pg_cluster" start
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p "$pg_port"
  log "PostgreSQL ready on 127.0.0.1:$pg_port"
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
    log "Redis already answers on $redis_port"; return; fi
  mkdir -p "$state/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes --save "" \
    --appendonly no --dir "$state/redis" --pidfile "$state/redis/redis.pid" \
    --logfile "$state/redis/redis.log"
  wait_for Redis sh -c "redis-cli -h 127.0.0.1 -p $redis_port ping | grep -q PONG"
  log "Redis ready on 127.0.0.1:$redis_port"
}

etcd_healthy() {
  ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$etcd_port" endpoint health >/dev/null 2>&1
}

start_etcd() {
  if etcd_healthy; then log "etcd already answers on $etcd_port"; return; fi
  mkdir -p "$state/etcd"
  nohup etcd --name auction-test --data-dir "$state/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "auction-test=http://127.0.0.1:$etcd_peer_port" \
    >"$state/etcd/etcd.log" 2>&1 &
  echo $! >"$state/etcd/etcd.pid"
  wait_for etcd etcd_healthy
  log "etcd ready on 127.0.0.1:$etcd_port"
}

print_env() {
  echo "export MESH_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "export MESH_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
  echo "export MESH_TEST_ETCD_ENDPOINTS=http://127.0.0.1:$etcd_port"
}

stop_all() {
  if [ -f "$state/etcd/etcd.pid" ]; then kill "$(cat "$state/etcd/etcd.pid")" 2>/dev/null || true; rm -f "$state/etcd/etcd.pid"; fi
  redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  if pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx "$pg_cluster"; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" "$pg_cluster" stop 2>/dev/null || true
  fi
}

case "${1:-}" in
  start) install_missing; start_postgres; start_redis; start_etcd ;;
  stop) stop_all ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
