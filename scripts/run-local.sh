#!/usr/bin/env bash
# The main job (`make run`): a local cluster on 127.0.0.1 — 4 demo backends
# of different speeds and 3 balancer nodes in front of them, gossiping load
# and replicating the config by raft (-bootstrap-expect 3). Ctrl-C stops all.
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
  join=()
  [ "$i" -gt 1 ] && join=(-join 127.0.0.1:7941)
  "$BIN" agent -node "node-$i" -listen "127.0.0.1:808$i" -admin "127.0.0.1:909$i" \
    -gossip "127.0.0.1:794$i" -raft "127.0.0.1:795$i" -bootstrap-expect 3 "${join[@]}" \
    -gossip-profile local -data-dir "$DATA/node-$i" -algorithm p2c "${flags[@]}" >"$DATA/node-$i.log" 2>&1 &
  pids+=($!)
done

# Wait (bounded) until every node is ready: a leader is elected and the
# config is applied.
for i in 1 2 3; do
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:909$i/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:909$i/readyz" >/dev/null || { echo "node-$i did not start; see $DATA/node-$i.log"; tail -5 "$DATA/node-$i.log"; exit 1; }
done

cat <<TXT
Local balancer cluster is up: 3 nodes gossiping load (p2c over cluster-wide
counts) with a raft-replicated config (logs and raft data in $DATA/).

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
  bin/balancer status -admin 127.0.0.1:9091     # the status page in the terminal: members, raft, backends, rates, p99
  bin/balancer members -admin 127.0.0.1:9091    # gossip members, raft roles, applied index
  bin/balancer weights -admin 127.0.0.1:9092    # the replicated backends and weights
  bin/balancer weights set slow 0 -admin 127.0.0.1:9093   # drain the slow backend (any node forwards to the leader)

Press Ctrl-C to stop everything.
TXT
wait
