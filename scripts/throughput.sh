#!/usr/bin/env bash
# Throughput of the HTTP proxy against direct backend access, in one run on
# one machine: 4 demo backends, wrk with keep-alive and 64-byte answers,
# first direct to one backend, then through one balancer node, then (when
# haproxy is installed) through HAProxy with balance leastconn.
# Usage: scripts/throughput.sh [duration] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONNS=${2:-64}
BIN=${BIN:-bin/balancer}
ALG=${ALG:-least-conn-local}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

flags=()
hap_servers=""
for i in 1 2 3 4; do
  port=$((19180 + i))
  "$BIN" demo-backend -name "b$i" -listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pids+=($!)
  flags+=(-backend "b$i=127.0.0.1:$port")
  hap_servers+="    server b$i 127.0.0.1:$port
"
done
"$BIN" agent -node tp -listen 127.0.0.1:19180 -admin 127.0.0.1:19190 -data-dir "$tmp/data" \
  -algorithm "$ALG" "${flags[@]}" -log-level warn &
pids+=($!)
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:19190/readyz >/dev/null 2>&1 && break; sleep 0.1; done

rps() { wrk -t2 -c"$CONNS" -d"$DUR" --latency "$1" | tee "$tmp/last" | awk '/Requests\/sec/ {print $2}'; }
p50() { awk '$1=="50%" {print $2}' "$tmp/last"; }
p99() { awk '$1=="99%" {print $2}' "$tmp/last"; }

echo "wrk -t2 -c$CONNS -d$DUR, keep-alive, 64-byte bodies, $(nproc) cores shared by wrk, proxy and backends"
d=$(rps "http://127.0.0.1:19181/?size=64"); dp50=$(p50); dp99=$(p99)
printf "%-28s %10s req/s  p50 %-8s p99 %-8s\n" "direct to one backend" "$d" "$dp50" "$dp99"
b=$(rps "http://127.0.0.1:19180/?size=64"); bp50=$(p50); bp99=$(p99)
printf "%-28s %10s req/s  p50 %-8s p99 %-8s  ratio %.2f\n" "balancer ($ALG)" "$b" "$bp50" "$bp99" "$(echo "$b / $d" | bc -l)"
if command -v haproxy >/dev/null; then
  cat >"$tmp/haproxy.cfg" <<CFG
global
    maxconn 4000
    nbthread 2
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend f
    bind 127.0.0.1:19170
    default_backend b
backend b
    balance leastconn
    http-reuse always
$hap_servers
CFG
  haproxy -f "$tmp/haproxy.cfg" -db >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -fs http://127.0.0.1:19170/ >/dev/null 2>&1 && break; sleep 0.1; done
  h=$(rps "http://127.0.0.1:19170/?size=64"); hp50=$(p50); hp99=$(p99)
  printf "%-28s %10s req/s  p50 %-8s p99 %-8s  ratio %.2f\n" "haproxy (leastconn)" "$h" "$hp50" "$hp99" "$(echo "$h / $d" | bc -l)"
  printf "balancer / haproxy: %.2f\n" "$(echo "$b / $h" | bc -l)"
fi
