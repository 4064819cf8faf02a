#!/bin/sh
# Installs the packages declared for this container that are not installed yet.
# Managed by infrahaus-operator: runs at boot (config-manager.service) and during Sync.
# Safe to repeat: packages already present are recognised without network access.
set -eu
# Package names are split on spaces below and must never be glob-expanded.
set -f

CONFIG="${CONFIG_MANAGER_ENV:-/etc/config-manager/config.env}"

log() {
    printf 'config-sync: %s\n' "$*"
}

if [ ! -r "$CONFIG" ]; then
    log "cannot read $CONFIG"
    exit 1
fi
# shellcheck source=/dev/null
. "$CONFIG"

detect_package_manager() {
    for candidate in apt-get apk dnf yum; do
        if command -v "$candidate" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

is_installed() {
    case "$1" in
        apt-get) [ "$(dpkg-query -W -f='${Status}' "$2" 2>/dev/null)" = "install ok installed" ] ;;
        apk) apk info -e "$2" >/dev/null 2>&1 ;;
        dnf | yum) rpm -q "$2" >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

install_packages() {
    manager=$1
    shift
    case "$manager" in
        apt-get)
            export DEBIAN_FRONTEND=noninteractive
            # Waits for unattended-upgrades at boot instead of failing on the lock.
            apt-get -o DPkg::Lock::Timeout=300 update -q
            apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"
            ;;
        apk) apk add --no-cache "$@" ;;
        dnf) dnf install -y "$@" ;;
        yum) yum install -y "$@" ;;
    esac
}

log "container $CONTAINER_NAMESPACE/$CONTAINER_NAME (vmid $CONTAINER_VMID, template ${TEMPLATE_NAME:-none})"

if [ -z "$PACKAGES" ]; then
    log "no packages declared"
    exit 0
fi

if ! manager=$(detect_package_manager); then
    log "no supported package manager found (apt-get, apk, dnf, yum)"
    exit 1
fi
log "package manager: $manager"

missing=""
for package in $PACKAGES; do
    if is_installed "$manager" "$package"; then
        log "already installed: $package"
    else
        missing="$missing $package"
    fi
done

if [ -z "$missing" ]; then
    log "all declared packages are installed"
    exit 0
fi

log "installing:$missing"
# Word splitting of $missing is intended: one argument per package.
# shellcheck disable=SC2086
install_packages "$manager" $missing
log "installed:$missing"
