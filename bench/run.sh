#!/usr/bin/env bash
# The service benchmark in one command: installs what is missing (wrk and nginx from Debian,
# oha with cargo; nginx is the fixed-rate run's static reference), builds release, and prints
# gatehouse against its limits (see bench/service.rs). Loopback only; every process it starts
# is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v redis-benchmark >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx; }
command -v oha >/dev/null 2>&1 || cargo install oha --locked
export PATH="$HOME/.cargo/bin:$PATH"
cargo bench --bench service "$@"
