#!/usr/bin/env bash
# Instructions per /v1/validate, counted by callgrind (repeatable on a shared machine, unlike
# wall-clock throughput): the release binary on the embedded store, ENFORCED, one owned
# session, with GATEHOUSE_STATS on and off. Each setting is run twice, with 1,000 and 5,000
# checks; the difference over 4,000 is the cost of one check (start-up and shutdown cancel
# out). Loopback only.
#
# Run: bash bench/instructions.sh   (builds release first; needs valgrind and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release --locked -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
binary=target/release/gatehouse
secret=bench-instructions-secret-0123456789abcdef
total() { # total <stats on|off> <checks>: instructions of a whole run
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  GATEHOUSE_LISTEN=127.0.0.1:$port GATEHOUSE_JWT_SECRET=$secret GATEHOUSE_STATS=$1 GATEHOUSE_LOG=error \
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$binary" serve >/dev/null 2>"$out/vg.$1.$2" &
  local pid=$!
  GATEHOUSE_JWT_SECRET=$secret python3 bench/instructions.py "$binary" "$port" "$2"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out/cg.$1.$2"
}
declare -A per
for stats in on off; do
  small=$(total "$stats" 1000)
  large=$(total "$stats" 5000)
  per[$stats]=$(( (large - small) / 4000 ))
  echo "GATEHOUSE_STATS=$stats: $small instructions for 1,000 checks, $large for 5,000: ${per[$stats]} per check"
done
python3 -c "on, off = ${per[on]}, ${per[off]}; print(f'counters on / off: {on} / {off} instructions per check: +{on - off} ({(on / off - 1) * 100:.2f} %)')"
