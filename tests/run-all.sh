#!/usr/bin/env bash
# run-all.sh - install what the tests need, build, and run every test.
#
# Usage: bash tests/run-all.sh [--asan] [--install-only] [--build-only]
#
#   (no option)     install missing packages (Debian 12, as root), build into
#                   build/, run `ctest` there; exit with ctest's status
#   --asan          also build with AddressSanitizer + UBSan into build-asan/
#                   and run the suite there too (same as STARTTLS_PROXY_ASAN=1)
#   --install-only  only install the packages
#   --build-only    install and build build/, run no test (used by demo.sh)
#
# Safe to run again: packages already installed are not touched, and the
# build directories are reused.
set -euo pipefail

# Packages the build and the test suite need. libnet-ssleay-perl is what
# swaks --tls uses (only a Recommends of swaks). podman builds and runs the
# container image (test_container.py) with runc: Debian 12's crun refuses
# hybrid cgroup layouts; python3-yaml reads docker/compose.yaml and
# docker/k8s/. dovecot-core is the SASL server of the private Postfix
# that test_backend_auth.py logs in to.
PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev libinih-dev libcmocka-dev libunbound-dev dns-root-data
  libcurl4-openssl-dev
  nsd ldnsutils
  openssl ca-certificates
  postfix swaks libnet-ssleay-perl testssl.sh curl dovecot-core
  stunnel4 nginx libnginx-mod-mail iproute2 nftables debootstrap man-db systemd
  python3 python3-pytest python3-aiosmtpd python3-jsonschema zlib1g-dev
  prometheus python3-prometheus-client haproxy
  podman buildah runc python3-yaml
)

usage() {
  sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

asan=${STARTTLS_PROXY_ASAN:-0}
mode=test
while [ $# -gt 0 ]; do
  case $1 in
    --asan) asan=1 ;;
    --install-only) mode=install ;;
    --build-only) mode=build ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run-all.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# Work from the repository root, wherever we were started from.
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

# pkg_installed - true if the Debian package $1 is installed
pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = \
    "install ok installed" ]
}

# postfix_running - true if a Postfix master process is running
postfix_running() {
  if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
    return 0
  fi
  command -v systemctl >/dev/null 2>&1 &&
    systemctl is-active --quiet postfix 2>/dev/null
}

# install_packages - apt-get install whatever of PACKAGES is missing
install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "run-all.sh: missing packages: ${missing[*]}" >&2
    echo "run-all.sh: run as root (Debian 12) to install them" >&2
    exit 1
  fi
  echo "run-all.sh: installing: ${missing[*]}"

  export DEBIAN_FRONTEND=noninteractive
  local new_postfix=0 had_main_cf=0 new_dovecot=0
  pkg_installed dovecot-core || new_dovecot=1
  if ! pkg_installed postfix; then
    new_postfix=1
    [ -e /etc/postfix/main.cf ] && had_main_cf=1
    # Install Postfix unconfigured: we only use its programs (smtpd with a
    # private config directory, smtp-sink, posttls-finger), not the service.
    echo "postfix postfix/main_mailer_type select No configuration" |
      debconf-set-selections
  fi

  apt-get update
  apt-get install -y "${missing[@]}"

  # "No configuration" leaves no main.cf, so the Postfix service does not
  # start. Should it run anyway, stop it if this install started it: a
  # Postfix that was configured before (main.cf) is the user's and is left
  # alone.
  if [ "$new_postfix" = 1 ] && [ "$had_main_cf" = 0 ] && postfix_running; then
    echo "run-all.sh: stopping the Postfix service that the install started"
    if command -v systemctl >/dev/null 2>&1; then
      systemctl stop postfix 2>/dev/null || true
    fi
    postfix stop 2>/dev/null || true
  fi
  # Likewise Dovecot: the tests run a private instance of their own, and a
  # service this install started is stopped again.
  if [ "$new_dovecot" = 1 ] && command -v systemctl >/dev/null 2>&1 &&
    systemctl is-active --quiet dovecot 2>/dev/null; then
    echo "run-all.sh: stopping the Dovecot service that the install started"
    systemctl stop dovecot 2>/dev/null || true
  fi
}

# build_tree DIR [CMAKE_ARGS...] - configure and build into DIR
build_tree() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DBUILD_TESTING=ON "$@"
  cmake --build "$dir" -j"$(nproc)"
}

# test_tree DIR - run the whole suite in DIR; returns ctest's status
test_tree() {
  ctest --test-dir "$1" --output-on-failure --no-tests=error
}

install_packages
[ "$mode" = install ] && exit 0

build_tree build
if [ "$asan" = 1 ]; then
  build_tree build-asan -DENABLE_SANITIZERS=ON
fi
[ "$mode" = build ] && exit 0

status=0
test_tree build || status=$?
if [ "$asan" = 1 ]; then
  asan_status=0
  # quarantine_size_mb: ASan keeps freed memory unused for a while to catch
  # use-after-free; its default 256 MB shows up as RSS growth in the
  # integration test that bounds the proxy's memory while relaying 50 MB
  # (test_faults.py), 16 MB still covers every use-after-free window of a
  # callback.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:quarantine_size_mb=16} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    test_tree build-asan || asan_status=$?
  if [ "$status" -eq 0 ]; then
    status=$asan_status
  fi
fi
exit "$status"
