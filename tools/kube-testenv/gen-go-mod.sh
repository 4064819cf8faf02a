#!/usr/bin/env bash
# Regenerates go.mod for a Kubernetes release: requires k8s.io/kubernetes at
# that release and pins every staging module it lists (k8s.io/X => ./staging/...)
# to the matching published v0 version, so the module graph resolves without
# the Kubernetes source tree.
set -euo pipefail
cd "$(dirname "$0")"
K8S_VERSION="${1:?usage: gen-go-mod.sh v1.34.N}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

modfile="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$modfile")"

{
  echo "module github.com/infrahaus/infrahaus-operator/tools/kube-testenv"
  echo
  echo "go 1.24.0"
  echo
  echo "require k8s.io/kubernetes ${K8S_VERSION}"
  echo
  echo "replace ("
  for m in $staging; do echo "	$m => $m ${STAGING_VERSION}"; done
  echo ")"
} > go.mod
echo "$K8S_VERSION" > K8S_VERSION
go mod tidy
