#!/usr/bin/env bash
# demo.sh - install, build, and run starttls-proxy on the shipped
# configuration in front of a demo backend, ready for mail on 127.0.0.1:25.
#
# Usage (Debian 12, as root): bash tests/demo.sh
#
# - installs the packages and builds build/starttls-proxy (tests/run-all.sh
#   --build-only);
# - creates /etc/starttls-proxy/cert.pem and key.pem (self-signed, for the
#   demo) if they do not exist, and installs config/starttls-proxy.ini as
#   /etc/starttls-proxy/starttls-proxy.ini if that does not exist;
# - starts Postfix's smtp-sink on 127.0.0.1:10025 as the backend; it keeps
#   every message it receives under /var/tmp/starttls-proxy-demo/ and is
#   stopped when the demo ends;
# - runs the proxy in the foreground; stop it with Ctrl-C.
#
# DEMO_DRY_RUN=1 does everything except starting the proxy.
set -euo pipefail

CONF_DIR=/etc/starttls-proxy
CONF=$CONF_DIR/starttls-proxy.ini
CERT=$CONF_DIR/cert.pem
KEY=$CONF_DIR/key.pem
SINK_ADDR=127.0.0.1
SINK_PORT=10025
SINK_DIR=/var/tmp/starttls-proxy-demo

die() {
  echo "demo.sh: $*" >&2
  exit 1
}

# port_open HOST PORT - true if something accepts TCP connections there
port_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
[ "$(id -u)" -eq 0 ] || die "run me as root (I write $CONF_DIR and bind port 25)"

bash tests/run-all.sh --build-only
[ -x build/starttls-proxy ] || die "build/starttls-proxy was not built"

mkdir -p "$CONF_DIR"

# A self-signed certificate for the demo; a real one replaces these files.
if [ ! -e "$CERT" ] && [ ! -e "$KEY" ]; then
  name=$(hostname -f 2>/dev/null || hostname 2>/dev/null || true)
  [ -n "$name" ] || name=localhost
  san="DNS:$name,IP:127.0.0.1"
  [ "$name" = localhost ] || san="$san,DNS:localhost"
  echo "demo.sh: creating a self-signed certificate for $name in $CONF_DIR"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -days 365 -subj "/CN=$name" -addext "subjectAltName=$san" \
      -keyout "$KEY.tmp" -out "$CERT.tmp" 2>/dev/null
  )
  chmod 0644 "$CERT.tmp"
  mv "$KEY.tmp" "$KEY"
  mv "$CERT.tmp" "$CERT"
elif [ ! -e "$CERT" ] || [ ! -e "$KEY" ]; then
  die "only one of $CERT and $KEY exists; add the other or remove both"
fi

if [ ! -e "$CONF" ]; then
  echo "demo.sh: installing config/starttls-proxy.ini as $CONF"
  install -m 0644 config/starttls-proxy.ini "$CONF"
else
  echo "demo.sh: using the existing $CONF"
fi

if grep -Eq '^[[:space:]]*listen[[:space:]]*=.*:25([[:space:]]*([,;#]|$))' \
     "$CONF" && port_open 127.0.0.1 25; then
  die "something already listens on port 25 (a local MTA?): stop it, or change listen in $CONF"
fi
if port_open "$SINK_ADDR" "$SINK_PORT"; then
  die "something already listens on $SINK_ADDR:$SINK_PORT, where the demo backend goes"
fi

# The demo backend: smtp-sink accepts every message and writes each one to a
# file in SINK_DIR (it runs as nobody after binding).
mkdir -p "$SINK_DIR"
chown nobody "$SINK_DIR"
smtp-sink -u nobody -d "$SINK_DIR/%Y%m%d-%H%M%S." \
  "$SINK_ADDR:$SINK_PORT" 64 &
sink_pid=$!

# stop_sink - stop the demo backend
stop_sink() {
  kill "$sink_pid" 2>/dev/null || true
}
trap stop_sink EXIT

for _ in $(seq 50); do
  kill -0 "$sink_pid" 2>/dev/null || die "smtp-sink did not start"
  port_open "$SINK_ADDR" "$SINK_PORT" && break
  sleep 0.1
done
port_open "$SINK_ADDR" "$SINK_PORT" ||
  die "smtp-sink does not listen on $SINK_ADDR:$SINK_PORT"

cat <<EOF

starttls-proxy demo: backend smtp-sink on $SINK_ADDR:$SINK_PORT (pid $sink_pid),
proxy configuration $CONF.
Send a test message through the proxy from another terminal with:

    swaks --server 127.0.0.1:25 --tls --to test@example.com

The backend keeps every message it receives in $SINK_DIR/.
The proxy logs to this terminal; stop it with Ctrl-C.

EOF

if [ "${DEMO_DRY_RUN:-0}" = 1 ]; then
  echo "demo.sh: DEMO_DRY_RUN=1, not starting the proxy"
  exit 0
fi

# exec keeps this PID for the proxy, so signals reach it directly; the EXIT
# trap is lost with exec, so a watcher stops smtp-sink once the proxy has
# exited, however it ends.
(
  trap '' INT TERM HUP
  while kill -0 $$ 2>/dev/null; do
    sleep 1
  done
  kill "$sink_pid" 2>/dev/null || true
) </dev/null >/dev/null 2>&1 &
trap - EXIT
exec build/starttls-proxy -c "$CONF"
