#!/usr/bin/env bash
# What embedding eventspool costs a host: three throwaway hosts built side by side in
# one run, one after another (never in parallel), each in its own crate and target
# directory, with default release settings plus `strip = true`:
#   none    - prints a line, no eventspool
#   lean    - eventspool with `default-features = false`: one track, one flush_detached
#   default - the same code with eventspool's default features (cli, serve)
# For each: crates in `cargo tree -e normal` (unique, the host itself excluded), the
# stripped release binary's size and what it adds over `none`, and the clean release
# build time (`cargo clean`, then `cargo build --release`), wall and CPU.
#
# Usage: [BASELINE=PATH] footprint.sh [PATH-TO-EVENTSPOOL]   (default: the checkout this script is in,
#        else /work/main). Set OFFLINE= (empty) to let cargo reach the network; by
#        default it builds --offline from the local registry cache.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [[ $# -ge 1 ]]; then
  crate=$(cd "$1" && pwd)
elif [[ -f "$here/../Cargo.toml" ]] && grep -q '^name = "eventspool"' "$here/../Cargo.toml"; then
  crate=$(cd "$here/.." && pwd)
else
  crate=/work/main
fi
offline=${OFFLINE---offline}
root=$(mktemp -d "${TMPDIR:-/tmp}/eventspool-footprint.XXXXXX")
trap 'rm -rf "$root"' EXIT
export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never
target=$(rustc -vV | sed -n 's/^host: //p')

host() { # name, dependency line (empty for none), main.rs body, [checkout for the lock file]
  local dir="$root/$1"
  mkdir -p "$dir/src"
  cat >"$dir/Cargo.toml" <<EOF
[package]
name = "minhost"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
$2

[profile.release]
strip = true
EOF
  printf '%s\n' "$3" >"$dir/src/main.rs"
  # The same versions as eventspool's own lock file, so the figures describe it.
  local lock_from=${4:-$crate}
  if [[ -n "$2" && -f "$lock_from/Cargo.lock" ]]; then cp "$lock_from/Cargo.lock" "$dir/"; fi
}

plain='fn main() {
    println!("minhost");
}'
with_spool='fn main() {
    eventspool::detached_flush_hook();
    let dir = std::env::temp_dir().join("eventspool-footprint-minhost");
    let spool = eventspool::Spool::builder("minhost")
        .dir(&dir)
        .endpoint("http://127.0.0.1:9/")
        .build();
    spool.track(eventspool::Event::new("started"));
    let _ = spool.flush_detached(eventspool::DEFAULT_DETACHED_LIFETIME);
    println!("minhost");
}'

host none "" "$plain"
hosts=(none)
# BASELINE=PATH: also the same host against an earlier checkout (before the features
# existed, every host got all of it), built in the same run.
if [[ -n "${BASELINE:-}" ]]; then
  host before "eventspool = { path = \"$BASELINE\" }" "$with_spool" "$BASELINE"
  hosts+=(before)
fi
host lean "eventspool = { path = \"$crate\", default-features = false }" "$with_spool"
host default "eventspool = { path = \"$crate\" }" "$with_spool"
hosts+=(lean default)

echo "eventspool: $crate ($(git -C "$crate" rev-parse --short HEAD 2>/dev/null || echo '?'), plus any uncommitted changes)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version)"
echo

declare -A size
printf '%-8s %7s %12s %12s %10s %10s\n' host crates "binary (B)" "added (B)" "wall (s)" "CPU (s)"
for h in "${hosts[@]}"; do
  dir="$root/$h"
  export CARGO_TARGET_DIR="$dir/target"
  # Resolve (and fetch, if online) before the clock starts: build time, not download.
  (cd "$dir" && cargo fetch $offline --quiet --target "$target")
  crates=$(cd "$dir" && cargo tree $offline -e normal --prefix none | sed 's/ (\*)$//' | sort -u | grep -vc '^minhost ' || true)
  (cd "$dir" && cargo clean --quiet)
  # Wall time, and CPU time (user + system over all processes), which a busy machine
  # disturbs less than it does the wall clock.
  TIMEFORMAT='%R %U %S'
  read -r wall user sys < <({ time (cd "$dir" && cargo build $offline --release --quiet 2>"$dir/build.err"); } 2>&1)
  if [[ -s "$dir/build.err" ]]; then sed "s/^/  ($h) /" "$dir/build.err" >&2; fi
  bin="$CARGO_TARGET_DIR/release/minhost"
  size[$h]=$(stat -c %s "$bin")
  added=$((size[$h] - size[none]))
  # It runs: records one event and hands the flush to a detached child (port 9 refuses
  # it; the child gives up on its own).
  if [[ $h != none ]]; then (cd "$dir" && "$bin" >/dev/null); fi
  printf '%-8s %7s %12s %12s %10.1f %10.1f\n' "$h" "$crates" "${size[$h]}" "$added" "$wall" "$(awk "BEGIN { print $user + $sys }")"
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
