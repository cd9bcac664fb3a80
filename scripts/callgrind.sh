#!/usr/bin/env bash
# Instruction profile of one kind of proxied request (valgrind's callgrind: instruction counts,
# repeatable on a shared machine where timings are not). One serving worker, the peers' upstream
# nginx on 19001, h2load sending a fixed number of requests after a warm-up; only those requests
# are counted (instrumentation is switched on and off around them).
#
#   scripts/callgrind.sh get|post4k|post64k|h2|cookie [REQUESTS]
#   scripts/callgrind.sh ws [SECS]
#   scripts/callgrind.sh nginx [REQUESTS]
#
# ws: a WebSocket echo (examples/ws_bench.rs on 19006, 64 connections, 128-byte messages, one in
# flight per connection) through the gateway for SECS seconds (default 10); the instructions of
# a 0-second run (connecting, upgrading and closing the 64 connections) are subtracted, so the
# figure is per message round trip (both directions of the tunnel). Its top frames include the
# one set of upgrades.
#
# nginx: the peer itself, measured the same way for comparison: the peer benchmark's nginx
# (../shared/peerbench/nginx.conf: plain proxy, no authentication) as one process
# (`master_process off`, one worker) on 19002, plain GETs without a token.
#
# Prints instructions per request and the top frames by inclusive count; the full profile is
# left in /tmp/gwprof/ for callgrind_annotate. Needs valgrind, nginx, h2load (nghttp2-client).
# Uses ports 19001, 19004 and 19014 (stop scripts/bench.sh first).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peerbench=${PEERBENCH:-$root/../shared/peerbench}
target=${CARGO_TARGET_DIR:-$root/target}
row=${1:?usage: callgrind.sh get|post4k|post64k|h2|cookie|nginx [REQUESTS] | ws [SECS]}
n=${2:-20000}
[ "$row" = ws ] && n=${2:-10}
# The examples first, then the gateway alone: built in one invocation, the examples' dev-dependencies
# would switch their features (tokio's test-util) on in the measured binary too, which is then
# not the one `cargo build --release` ships.
(cd "$root" && cargo build --release --examples && cargo build --release --bin gateway)
bin=$target/release/gateway
out=/tmp/gwprof; mkdir -p "$out" /tmp/peerbench/tls
work=$(mktemp -d /tmp/gwprof.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
t=/tmp/peerbench/tls
if [ ! -f $t/cert.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $t/key.pem -out $t/cert.pem 2>/dev/null
  cat $t/cert.pem $t/key.pem >$t/combined.pem
fi
curl -s -o /dev/null http://127.0.0.1:19001/ || { nginx -c "$peerbench/upstream-nginx.conf" & pids+=($!); }
cat >"$work/gw.yaml" <<YAML
version: 1
listen: {http: 127.0.0.1:19004, https: 127.0.0.1:19014, workers: 1}
tls: {cert: $t/cert.pem, key: $t/key.pem}
admin: {listen: null}
log: {level: warn}
store: {redb: {path: $work/gw.redb}}
rate_limits: {login_per_ip: 'off', login_per_account: 'off', signup_per_ip: 'off'}
routes:
  - {name: ws, path: /ws, upstream: 'http://127.0.0.1:19006', auth: required}
  - {name: app, path: /, upstream: 'http://127.0.0.1:19001', auth: required}
YAML
if [ "$row" = ws ]; then "$target/release/examples/ws_bench" echo 127.0.0.1:19006 & pids+=($!); fi
file=$out/callgrind.$row.out; rm -f "$file" "$file".*
if [ "$row" = nginx ]; then
  sed -e 's/^worker_processes .*/worker_processes 1; master_process off;/' \
    -e "s#^pid .*#pid $work/nginx.pid;#" -e "s#^error_log .*#error_log $work/nginx-error.log warn;#" \
    "$peerbench/nginx.conf" >"$work/nginx.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$file" \
    nginx -c "$work/nginx.conf" >"$work/nginx.log" 2>&1 & pids+=($!); vg=$!
  for _ in $(seq 600); do curl -s -o /dev/null http://127.0.0.1:19002/ && break; sleep 0.1; done
  nginx_load() { # nginx_load REQUESTS
    h2load --h1 -n "$1" -c16 http://127.0.0.1:19002/ >"$work/load.out" 2>&1
    grep -q "$1 succeeded, 0 failed" "$work/load.out" || { echo "the load failed:"; cat "$work/load.out"; exit 1; } >&2
  }
  nginx_load 2000
  callgrind_control -i on "$vg" >/dev/null
  nginx_load "$n"
  callgrind_control -i off "$vg" >/dev/null
  callgrind_control -d "$vg" >/dev/null
  kill "$vg"; wait "$vg" 2>/dev/null || true
  dump=$(ls "$file".* | sort -V | tail -1)
  total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "nginx: $n requests, $total instructions, $((total / n)) per request (profile: $dump)"
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -v '^-' | sed -n '/file:function/,$p' |
    head -30 | awk -v n="$n" 'NR > 1 && $1 ~ /[0-9]/ {c=$1; gsub(",", "", c); f=$0; sub(/^[^)]*\) */, "", f); printf "%8d/req  %s\n", c / n, f}'
  exit 0
fi
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$file" \
  "$bin" serve --config "$work/gw.yaml" >"$work/gw.log" 2>&1 & pids+=($!); vg=$!
for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:19004/healthz && break; sleep 0.1; done
email="prof$RANDOM@example.org"
curl -sf -o /dev/null -X POST http://127.0.0.1:19004/api/auth/signup -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"Quiet-Harbour-Lantern-42\"}"
login=$(curl -sf -D "$work/login.head" -X POST http://127.0.0.1:19004/api/auth/login \
  -H 'content-type: application/json' -d "{\"email\":\"$email\",\"password\":\"Quiet-Harbour-Lantern-42\"}")
tok=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$login")
cookie=$(awk 'tolower($1) == "set-cookie:" && $2 ~ /^gw_(access|csrf)=/ {sub(/;.*/, "", $2); printf "%s%s", sep, $2; sep="; "}' "$work/login.head")
head -c 4096 /dev/zero | tr '\0' a >"$work/post4k"
head -c 65536 /dev/zero | tr '\0' a >"$work/post64k"
ws_load() { # ws_load SECS: prints the messages echoed
  local r
  r=$("$target/release/examples/ws_bench" load ws://127.0.0.1:19004/ws 64 "$1" 128 "Authorization: Bearer $tok")
  if [ "$1" = 0 ]; then echo 0; else echo $(( ${r%% *} * $1 )); fi
}
if [ "$row" = ws ]; then
  ws_load 2 >/dev/null # warm-up
  callgrind_control -i on "$vg" >/dev/null
  ws_load 0 >/dev/null # connecting, upgrading and closing only
  callgrind_control -i off "$vg" >/dev/null
  callgrind_control -d "$vg" >/dev/null
  base_dump=$(ls "$file".* | sort -V | tail -1)
  base=$(callgrind_annotate "$base_dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  callgrind_control -z "$vg" >/dev/null
  callgrind_control -i on "$vg" >/dev/null
  msgs=$(ws_load "$n")
  callgrind_control -i off "$vg" >/dev/null
  callgrind_control -d "$vg" >/dev/null
  kill "$vg"; wait "$vg" 2>/dev/null || true
  dump=$(ls "$file".* | sort -V | tail -1)
  total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "ws: $msgs messages in ${n}s, $total instructions, $base of them connecting and closing (0 s run)," \
    "$(( (total - base) / msgs )) per message (profile: $dump)"
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -v '^-' | sed -n '/file:function/,$p' |
    head -45 | awk -v n="$msgs" 'NR > 1 && $1 ~ /[0-9]/ {c=$1; gsub(",", "", c); f=$0; sub(/^[^)]*\) */, "", f); printf "%8d/msg  %s\n", c / n, f}'
  exit 0
fi
load() { # load REQUESTS
  case $row in
    get) h2load --h1 -n "$1" -c16 -H "Authorization: Bearer $tok" http://127.0.0.1:19004/ ;;
    cookie) h2load --h1 -n "$1" -c16 -H "Cookie: $cookie" http://127.0.0.1:19004/ ;;
    post4k|post64k) h2load --h1 -n "$1" -c16 -d "$work/$row" -H 'content-type: application/octet-stream' \
      -H "Authorization: Bearer $tok" http://127.0.0.1:19004/ ;;
    h2) h2load -n "$1" -c4 -m16 -H "Authorization: Bearer $tok" https://127.0.0.1:19014/ ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac >"$work/load.out" 2>&1
  grep -q "succeeded, 0 failed" "$work/load.out" && grep -q "2xx: *$1\b\|$1 2xx" "$work/load.out" ||
    { echo "the load failed:"; cat "$work/load.out"; exit 1; } >&2
}
load 2000 # warm-up: pools, caches, the token's verification
callgrind_control -i on "$vg" >/dev/null
load "$n"
callgrind_control -i off "$vg" >/dev/null
callgrind_control -d "$vg" >/dev/null
kill "$vg"; wait "$vg" 2>/dev/null || true
dump=$(ls "$file".* | sort -V | tail -1) # the dump of the counted requests
total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$row: $n requests, $total instructions, $((total / n)) per request (profile: $dump)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -v '^-' | sed -n '/file:function/,$p' |
  head -45 | awk -v n="$n" 'NR > 1 && $1 ~ /[0-9]/ {c=$1; gsub(",", "", c); f=$0; sub(/^[^)]*\) */, "", f); printf "%8d/req  %s\n", c / n, f}'
