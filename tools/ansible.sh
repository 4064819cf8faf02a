#!/usr/bin/env bash
# Installs Ansible (the `ansible` package from PyPI, which bundles the
# community.proxmox collection) with proxmoxer and requests into a venv, or
# takes it from the cache, and prints the path of its `ansible-playbook`. The
# cache key is the Ansible version, so only a new machine or a version bump
# pays for the install. Used by the benchmark against Ansible (hack/bench).
set -euo pipefail
version="12.3.0"
core_version="2.19.14"
proxmoxer_version="2.3.0"
requests_version="2.34.2"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/infrahaus/ansible/${version}"
venv="$cache_dir/venv"
bin="$venv/bin/ansible-playbook"

# A venv is kept when its install finished (`.installed`; an interrupted one
# leaves none) and its Python still runs (it refers to the machine's python3);
# otherwise it is made again.
if [[ ! -e "$cache_dir/.installed" ]] || ! "$venv/bin/python" -c 'import proxmoxer, requests' 2>/dev/null; then
  mkdir -p "$cache_dir"
  rm -rf "$venv" "$cache_dir/.installed"
  echo "installing ansible ${version} into $cache_dir" >&2
  start=$SECONDS
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "ansible==${version}" "ansible-core==${core_version}" "proxmoxer==${proxmoxer_version}" "requests==${requests_version}"
  if ! "$venv/bin/python" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("ansible_collections.community.proxmox") is None)'; then
    echo "ansible ${version} does not bundle the community.proxmox collection" >&2
    exit 1
  fi
  touch "$cache_dir/.installed"
  echo "installed ansible in $((SECONDS - start))s" >&2
fi
echo "$bin"
