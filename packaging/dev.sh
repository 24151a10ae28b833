#!/usr/bin/env bash
# Developer entry point; works from a fresh clone on a fresh Debian 12 machine.
#   bash packaging/dev.sh desk   install and start the desktop on the embedded default
#   bash packaging/dev.sh test   install everything (apt packages, venv, services) and run every check
#   bash packaging/dev.sh env    only build the virtual environment (.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=${STELLA_VENV:-.venv}
t0=$SECONDS
log() { printf '[dev %4ss] %s\n' "$((SECONDS - t0))" "$*" >&2; }

# Qt runtime libraries (PySide6 wheels), the CNCF registry and OpenSSH for integration tests.
# bubblewrap is the sandbox script steps run in: the desk's embedded default runs them on this
# machine, and the tests run them in it for real (without it they fail, never skip).
# podman and runc (installed together, so apt does not pull in crun, which fails on these
# machines' hybrid cgroups) run the deploy tests' containers, rootful and daemonless; nothing
# starts at install. busybox-static is what the tests' tiny image is built from.
# podman-compose comes from the dev extra (Debian's 1.0.3 mishandles host/none networking).
QT_PKGS=(libglib2.0-0 libegl1 libgl1 libfontconfig1 libxkbcommon0 libdbus-1-3 fonts-dejavu-core)
X_PKGS=(libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0
        libxcb-shape0 libxkbcommon-x11-0)
DESK_PKGS=(bubblewrap)
TEST_PKGS=(docker-registry openssh-server openssl python3-venv ca-certificates bubblewrap
           podman runc busybox-static)

missing_packages() {  # the packages of "$@" this machine lacks, one line
  local missing=() p
  for p in "$@"; do
    if [ "$p" = python3-venv ]; then
      # What matters is that python3 can make a venv with pip (Debian splits that off).
      python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("$p")
    else
      dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    fi
  done
  echo "${missing[*]}"
}

apt_install() {  # install what is missing, as root or with passwordless sudo; else say what
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      SUDO=sudo
    else
      log "these system packages are missing; ask root to install them, then run this again:"
      log "    apt-get install $missing"
      return 1
    fi
  else
    SUDO=
  fi
  log "apt-get install $missing"
  # Never let package scripts start sshd or the registry on their default ports.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  # shellcheck disable=SC2086  # one word per package
  # Wait for another apt or dpkg run to finish rather than fail on its lock.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends $missing >/dev/null
  [ "$own_policy" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
  return 0
}

# What rootful podman leaves outside its own storage (reference/container-runtime.md §6); the
# ones that did not exist before the tests are removed after them, if empty.
# (/var/lib/containers/cache is podman's blob-info cache, kept there whatever storage.conf says.)
PODMAN_LEFTOVERS=(/run/runc /run/containers /var/lib/containers/cache /var/lib/containers
                  /root/.config/containers/podman /root/.config/containers)

podman_before() {  # record which leftovers exist already; give the tests a scratch root
  PODMAN_EXISTED=()
  local p
  for p in "${PODMAN_LEFTOVERS[@]}" /dev/shm/libpod_lock /sys/fs/cgroup/*/libpod_parent; do
    [ -e "$p" ] && PODMAN_EXISTED+=("$p")
  done
  STELLA_TEST_PODMAN_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/stella-podman.XXXXXX")
  export STELLA_TEST_PODMAN_ROOT
}

existed_before() { local p; for p in "${PODMAN_EXISTED[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

podman_after() {  # the tests clean up after themselves; this catches what a killed run left
  local root=${STELLA_TEST_PODMAN_ROOT:-} dir pid point p
  [ -n "$root" ] && [ -d "$root" ] || return 0
  for dir in "$root"/*/; do
    [ -f "$dir/containers.conf" ] || continue
    if command -v podman >/dev/null; then
      for args in "rm -af -t 2" "pod rm -af" "system reset -f"; do
        # shellcheck disable=SC2086  # one word per argument
        CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
          CONTAINERS_REGISTRIES_CONF="$dir/registries.conf" podman $args >/dev/null 2>&1 || true
      done
    fi
  done
  # Processes started for the tests (conmon, a podman service) name the scratch root.
  for pid in $(grep -lsF "$root" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$pid" != "$$" ] && kill "$pid" 2>/dev/null || true
  done
  { grep -F " $root/" /proc/self/mounts || true; } | cut -d' ' -f2 | sort -r | while read -r point; do
    umount -l "$point" 2>/dev/null || true
  done
  rm -rf "$root" 2>/dev/null || true
  # Shared state only when this run made it and no podman is running now (another user's).
  if ! pgrep -x conmon >/dev/null && ! pgrep -x podman >/dev/null; then
    for p in /sys/fs/cgroup/*/libpod_parent; do
      [ -d "$p" ] && ! existed_before "$p" || continue
      find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    existed_before /dev/shm/libpod_lock || rm -f /dev/shm/libpod_lock
    existed_before /var/lib/containers/cache || rm -rf /var/lib/containers/cache
    for p in "${PODMAN_LEFTOVERS[@]}"; do
      [ -d "$p" ] && ! existed_before "$p" && rmdir "$p" 2>/dev/null || true
    done
  fi
}

build_venv() {  # $1 = extras. A half-built environment (an interrupted or failed earlier try)
  # is removed and built again, so one failure never blocks every later try.
  local ready="$VENV/.stella-ready-$1"
  if [ -e "$VENV" ] && { [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
    log "removing a half-built $VENV"
    rm -rf "$VENV"
  fi
  if [ -f "$ready" ] && [ "$ready" -nt pyproject.toml ]; then
    :  # built for these extras since pyproject.toml last changed (the install is editable)
  else
    rm -f "$ready"
    if [ ! -x "$VENV/bin/python" ]; then
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q --upgrade pip
    fi
    if ! "$VENV/bin/pip" install -q -e ".[$1]"; then
      log "the install failed; building $VENV again from scratch"
      rm -rf "$VENV"
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q --upgrade pip
      "$VENV/bin/pip" install -q -e ".[$1]"
    fi
    touch "$ready"
  fi
  log "virtual environment ready: $VENV/bin/stella is the command line; 'source $VENV/bin/activate' puts stella and stella-desk on your PATH"
}

case "${1:-}" in
  desk)
    shift
    # Everything the desk needs, asked for in one go before anything else happens. Qt aborts
    # without the X libraries; without bubblewrap the desk runs but refuses script steps.
    if ! apt_install python3-venv "${QT_PKGS[@]}" "${X_PKGS[@]}" "${DESK_PKGS[@]}"; then
      [ -n "$(missing_packages python3-venv "${QT_PKGS[@]}" "${X_PKGS[@]}")" ] && exit 1
      log "continuing without bubblewrap: script steps will be refused until it is installed"
    fi
    build_venv desk
    exec "$VENV/bin/stella-desk" "$@"
    ;;
  test)
    shift
    apt_install "${QT_PKGS[@]}" "${X_PKGS[@]}" "${TEST_PKGS[@]}" || exit 1
    build_venv dev
    # sigstore-js, an independent verifier of our evidence bundles (tests/interop).
    command -v npm >/dev/null || apt_install nodejs npm
    log "npm ci (tests/interop)"
    (cd tests/interop && npm ci --silent --no-audit --no-fund --loglevel=error)
    export QT_QPA_PLATFORM=offscreen STELLA_REQUIRE_SERVICES=1
    rc=0
    podman_before
    trap podman_after EXIT
    log "ruff";        "$VENV/bin/ruff" check core app tests || rc=1
    "$VENV/bin/ruff" format --check core app tests || rc=1
    log "mypy";        "$VENV/bin/mypy" core/stella_core || rc=1
    "$VENV/bin/mypy" app/stella_desk || rc=1
    log "import contracts"; "$VENV/bin/lint-imports" || rc=1
    log "agent protocol stubs"; "$VENV/bin/python" scripts/gen_protos.py --check || rc=1
    if [ "$#" -gt 0 ]; then
      log "pytest $*"; "$VENV/bin/pytest" -p no:cacheprovider -q "$@" || rc=1
    else
      # The desktop tests run in a process of their own: Qt objects they leave behind must never
      # be touched by the event processing pytest-qt does after every later test.
      log "pytest (core, integration) on two workers"
      # Two workers: most of the time goes to waiting on PostgreSQL, podman and subprocesses.
      "$VENV/bin/pytest" -p no:cacheprovider -q -n 2 tests --ignore=tests/app --ignore=tests/perf || rc=1
      log "pytest (desktop)"
      "$VENV/bin/pytest" -p no:cacheprovider -q tests/app || rc=1
      log "benchmarks (ratios against baselines measured in the same run; printed, not asserted)"
      "$VENV/bin/pytest" -p no:cacheprovider -q -s tests/perf || rc=1
    fi
    log "done rc=$rc"
    exit "$rc"
    ;;
  env)
    apt_install python3-venv || exit 1
    build_venv dev
    ;;
  *)
    echo "usage: bash packaging/dev.sh desk|test|env" >&2
    exit 2
    ;;
esac
