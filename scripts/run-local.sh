#!/usr/bin/env bash
# The main job (`make run`): a local demo on 127.0.0.1 — 4 demo backends of
# different speeds and 3 balancer nodes in front of them. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/balancer}
DATA=${DATA:-run-data}
mkdir -p "$DATA"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap cleanup INT TERM EXIT

# name port delay workers
backends=(
  "fast-1 9101 2ms 8"
  "fast-2 9102 2ms 8"
  "medium 9103 10ms 8"
  "slow   9104 40ms 8"
)
flags=()
for b in "${backends[@]}"; do
  read -r name port delay workers <<<"$b"
  "$BIN" demo-backend -name "$name" -listen "127.0.0.1:$port" -delay "$delay" -jitter 1ms -workers "$workers" \
    >"$DATA/$name.log" 2>&1 &
  pids+=($!)
  flags+=(-backend "$name=127.0.0.1:$port@1")
done

for i in 1 2 3; do
  "$BIN" agent -node "node-$i" -listen "127.0.0.1:808$i" -admin "127.0.0.1:909$i" \
    -data-dir "$DATA/node-$i" -algorithm least-conn "${flags[@]}" >"$DATA/node-$i.log" 2>&1 &
  pids+=($!)
done

# Wait (bounded) until every node answers its readiness check.
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:909$i/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:909$i/readyz" >/dev/null || { echo "node-$i did not start; see $DATA/node-$i.log"; tail -5 "$DATA/node-$i.log"; exit 1; }
done

cat <<TXT
Local balancer demo is up (logs in $DATA/).

  node    traffic                 admin / status page
  node-1  http://127.0.0.1:8081   http://127.0.0.1:9091/
  node-2  http://127.0.0.1:8082   http://127.0.0.1:9092/
  node-3  http://127.0.0.1:8083   http://127.0.0.1:9093/

  backends: fast-1 (2ms) fast-2 (2ms) medium (10ms) slow (40ms), 8 workers each

Try:
  curl -s http://127.0.0.1:8081/                 # answered by one backend
  for i in \$(seq 20); do curl -s http://127.0.0.1:8082/; done | sort | uniq -c
  curl -s http://127.0.0.1:9091/v1/load          # live in-flight and circuit states
  curl -s http://127.0.0.1:9091/metrics | grep balancer_

Press Ctrl-C to stop everything.
TXT
wait
