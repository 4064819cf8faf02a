#!/usr/bin/env bash
# Builds kube-testenv, or takes it from the cache, and prints the binary's path.
# The cache key is the Kubernetes release and the hash of go.sum, so only a new
# machine or a dependency change pays for the build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version="$(cat "$here/K8S_VERSION")"
sum_hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/infrahaus/kube-testenv/${k8s_version}-${sum_hash}"
bin="$cache_dir/kube-testenv"

if [[ ! -x "$bin" ]]; then
  mkdir -p "$cache_dir"
  minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=${k8s_version} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  echo "building kube-testenv ${k8s_version} into $cache_dir" >&2
  start=$SECONDS
  (cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  echo "built kube-testenv in $((SECONDS - start))s" >&2
fi
echo "$bin"
