#!/usr/bin/env bash
# Installs helm with `go install`, or takes it from the cache, and prints the
# binary's path. The cache key is the helm version, so only a new machine or a
# version bump pays for the build.
set -euo pipefail
version="v3.22.0"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/infrahaus/helm/${version}"
bin="$cache_dir/helm"

if [[ ! -x "$bin" ]]; then
  mkdir -p "$cache_dir"
  echo "installing helm ${version} into $cache_dir" >&2
  start=$SECONDS
  tmp="$(mktemp -d "$cache_dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${version}" "helm.sh/helm/v3/cmd/helm@${version}"
  mv "$tmp/helm" "$bin"
  echo "installed helm in $((SECONDS - start))s" >&2
fi
echo "$bin"
