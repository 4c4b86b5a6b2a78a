#!/usr/bin/env bash
# The one command that runs every test (the README names it; .ci/run calls it).
# On a fresh Debian machine it installs and starts PostgreSQL, Redis and etcd
# (deploy/local/backing-services.sh), lints the contracts with buf, then runs
# every Rust test of the workspace against those real servers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

deploy/local/backing-services.sh start
eval "$(deploy/local/backing-services.sh env)"

# buf comes from the npm registry, installed once into .tmp (not committed).
buf_version=1.75.0
buf="$root/.tmp/tools/node_modules/.bin/buf"
if [ ! -x "$buf" ] || ! "$buf" --version 2>/dev/null | grep -qx "$buf_version"; then
  mkdir -p .tmp/tools
  (cd .tmp/tools && npm install --silent --no-audit --no-fund "@bufbuild/buf@$buf_version" >/dev/null)
fi
(cd proto && "$buf" lint)
echo "[test] buf lint: clean"

# Each test makes its own PostgreSQL database; drop those of earlier runs.
psql "$MESH_TEST_POSTGRES_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'test\_%'" |
  while read -r name; do
    # One still in use (another run on this machine) is left for next time.
    psql "$MESH_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true
  done

# nextest runs each test in its own process; plain cargo test is the fallback.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi

# A client that is not ours: Python grpcio lists and describes every service
# through reflection and gets SERVING from health; SIGTERM exits 0 in < 5 s.
cargo build --quiet -p auction-gateway --bin auctiond
deploy/smoke/external-client.sh
