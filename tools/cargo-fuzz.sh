#!/usr/bin/env bash
# Installs cargo-fuzz with `cargo install`, or takes it from the cache, and
# prints the binary's path. The cache key is the cargo-fuzz version, so only a
# new machine or a version bump pays for the build.
set -euo pipefail
version="0.13.2"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/infrahaus/cargo-fuzz-${version}"
bin="$cache_dir/bin/cargo-fuzz"

if [[ ! -x "$bin" ]]; then
  mkdir -p "$cache_dir"
  echo "installing cargo-fuzz ${version} into $cache_dir" >&2
  start=$SECONDS
  # A target dir of its own: an install never waits on, or evicts, another build.
  CARGO_TARGET_DIR="$cache_dir/.build" cargo install --quiet --locked --root "$cache_dir" \
    cargo-fuzz --version "$version"
  rm -rf "$cache_dir/.build"
  echo "installed cargo-fuzz in $((SECONDS - start))s" >&2
fi
echo "$bin"
