#!/usr/bin/env bash
# Starts the built `auctiond dev` on a free port with a fresh data folder and
# checks it with a client that is not ours (Google's Python grpcio, reading
# the reflected descriptors), then stops it with SIGTERM and expects exit 0
# within 5 s. Called by deploy/test.sh after the Rust tests built auctiond.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
auctiond=${AUCTIOND:-${CARGO_TARGET_DIR:-target}/debug/auctiond}

venv=.tmp/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc_reflection, grpc_health' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/smoke/requirements.txt
fi

data=$(mktemp -d)
out=$(mktemp)
"$auctiond" dev --listen 127.0.0.1:0 --data-dir "$data" >"$out" 2>"$data/auctiond.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
for _ in $(seq 1 100); do grep -q 'http://' "$out" && break; sleep 0.1; done
address=$(grep -o 'http://[0-9.:]*' "$out" | head -n 1 | sed 's#http://##')
[ -n "$address" ] || { echo "auctiond did not say where it listens"; cat "$data/auctiond.log"; exit 1; }

"$venv/bin/python" deploy/smoke/reflection_health.py "$address"

started=$(date +%s%N)
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "auctiond stopped on SIGTERM with exit code $status in ${took_ms} ms"
[ "$status" -eq 0 ] && [ "$took_ms" -lt 5000 ]
