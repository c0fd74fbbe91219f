#!/usr/bin/env bash
# run-bench.sh - side-by-side benchmark of starttls-proxy, stunnel, nginx
# and a direct connection, on loopback, with the same certificate and load.
# Prints one markdown table (plus the machine's `openssl speed` figures).
#
# usage: tests/bench/run-bench.sh [--quick] [--only S1,S3] [--pin]
#                                 [--pin-load] [--out FILE] [--keep]
#                                 [--repeat N] [--rate N]
#                                 [--nice N] [-h]
# See tests/bench/README.md for what each scenario measures.
set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=0
ONLY="S1,S1R,S1F,S2,S2F,S3,S4,S5"
PIN=0
OUT=""
KEEP=0
NICE=""
REPEAT=1
RATE=${BENCH_RATE:-}

usage() {
    cat <<'EOF'
usage: run-bench.sh [--quick] [--only LIST] [--pin] [--pin-load]
                    [--out FILE] [--keep] [--repeat N] [--rate N] [--nice N]
  --quick      each scenario for ~2 s, S4 with 200 sessions: checks that the
               tools and every setup work (exit 1 on any error), not speed
  --only LIST  scenarios to run, comma separated: S1,S1R,S1F,S2,S2F,S3,
               S4,S5 (S1R = S1 with the RSA-2048 certificate; S1 includes
               it unless --only names S1 alone; S1F/S2F = S1/S2 at a fixed
               offered rate, for CPU per session at equal load)
  --pin        load generator on CPU 1, servers and sink on CPU 0 (taskset)
  --pin-load   only the load generator on CPU 1; servers may use every CPU
               (for worker scaling: PROXY_WORKERS=1 and =2 in turn)
  --out FILE   append the table to FILE
  --keep       keep the temporary directory (configs, logs)
  --repeat N   run each S1/S2/S3/S5 load N times against the same setup
               and report the median run (default 1; S1F/S2F: the run
               with the median CPU per session)
  --rate N     sessions offered per second in S1F and S2F (default 200)
  --nice N     run everything at nice level N (e.g. -10 on a shared
               machine, so that other work disturbs the figures less)
Environment:
  STARTTLS_PROXY_BIN, SMTP_LOAD_BIN, SMTP_SINK_BIN  use these binaries
               instead of building them
  BENCH_BUILD_DIR    build directory (default <repo>/build)
  PROXY_WORKERS      if set, written as [proxy] workers = N
  NGINX_WORKERS      nginx worker_processes (default auto)
  S1_CONC, S2_CONC   concurrency of S1/S2 (default 100)
  BENCH_SECONDS      seconds per throughput run (default 10, quick 2)
  S4_SESSIONS        idle sessions in S4 (default 10000, quick 200)
  S5_NOOPS           NOOP round trips in S5 (default 20000, quick 2000)
  S5_PIN=0           do not pin S5 (default: pinned when taskset and 2
                     CPUs are there, see README)
  BENCH_ALLOW_MISSING=1  a peer that is not installed is skipped, not a
                     failure
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --only) shift; ONLY=${1:-}; ONLY_GIVEN=1 ;;
    --only=*) ONLY=${1#--only=}; ONLY_GIVEN=1 ;;
    --pin) PIN=1 ;;
    --pin-load) PIN=2 ;;
    --out) shift; OUT=${1:-} ;;
    --out=*) OUT=${1#--out=} ;;
    --keep) KEEP=1 ;;
    --nice) shift; NICE=${1:-} ;;
    --repeat) shift; REPEAT=${1:-} ;;
    --repeat=*) REPEAT=${1#--repeat=} ;;
    --rate) shift; RATE=${1:-} ;;
    --rate=*) RATE=${1#--rate=} ;;
    --nice=*) NICE=${1#--nice=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run-bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
ONLY=$(echo ",$ONLY," | tr 'a-z' 'A-Z' | tr -d ' ')
# S1 brings its RSA variant along unless the list is explicit about it
if [[ "$ONLY" == *",S1,"* && "${ONLY_GIVEN:-0}" = 0 ]]; then ONLY="$ONLY,S1R,"; fi
want() { [[ "$ONLY" == *",$1,"* ]]; }

if [ "$QUICK" = 1 ]; then
    SECS=${BENCH_SECONDS:-2}
    S4_N=${S4_SESSIONS:-200}
    S5_K=${S5_NOOPS:-2000}
    S3_SIZE=1048576
else
    SECS=${BENCH_SECONDS:-10}
    S4_N=${S4_SESSIONS:-10000}
    S5_K=${S5_NOOPS:-20000}
    S3_SIZE=10485760
fi
S1C=${S1_CONC:-100}
S2C=${S2_CONC:-100}
S3C=20
NGINX_WORKERS=${NGINX_WORKERS:-auto}

log() { echo "run-bench: $*" >&2; }

case "$REPEAT" in
''|*[!0-9]*|0) log "--repeat needs a positive number"; exit 2 ;;
esac
RATE=${RATE:-200}
case "$RATE" in
''|*[!0-9]*|0) log "--rate needs a positive whole number"; exit 2 ;;
esac
RATE_CAP=1000   # open sessions at most in S1F/S2F (an offer beyond is missed)
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

if [ -n "$NICE" ]; then
    renice -n "$NICE" -p $$ >/dev/null || { log "cannot renice to $NICE"; exit 2; }
fi

# ---------------------------------------------------------------- build
BUILD=${BENCH_BUILD_DIR:-$ROOT/build}
PROXY_ORIGIN="supplied by STARTTLS_PROXY_BIN, not built by the runner"
build_tools() {
    if [ -z "${STARTTLS_PROXY_BIN:-}" ]; then
        PROXY_ORIGIN="built by the runner from this tree"
        if [ ! -f "$BUILD/CMakeCache.txt" ]; then
            log "configuring $BUILD"
            cmake -S "$ROOT" -B "$BUILD" >/dev/null || return 1
        fi
        cmake --build "$BUILD" --target starttls-proxy -j2 >/dev/null || return 1
        STARTTLS_PROXY_BIN=$BUILD/starttls-proxy
    fi
    if [ -z "${SMTP_LOAD_BIN:-}" ] || [ -z "${SMTP_SINK_BIN:-}" ]; then
        # standalone build of tests/bench, whether or not the top level
        # includes it
        local bb=$BUILD/bench-tools
        if [ ! -f "$bb/CMakeCache.txt" ]; then
            cmake -S "$HERE" -B "$bb" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
                >/dev/null || return 1
        fi
        cmake --build "$bb" -j2 >/dev/null || return 1
        SMTP_LOAD_BIN=${SMTP_LOAD_BIN:-$bb/smtp-load}
        SMTP_SINK_BIN=${SMTP_SINK_BIN:-$bb/smtp-sink-bench}
    fi
}
if ! build_tools; then
    log "build failed"
    exit 1
fi
for b in "$STARTTLS_PROXY_BIN" "$SMTP_LOAD_BIN" "$SMTP_SINK_BIN"; do
    [ -x "$b" ] || { log "missing binary $b"; exit 1; }
done

STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
NGINX=$(command -v nginx || true)
NGINX_MAIL_MOD=/usr/lib/nginx/modules/ngx_mail_module.so

# ---------------------------------------------------------------- state
T=$(mktemp -d /tmp/starttls-bench.XXXXXX)
PIDS=()          # every child still to be stopped
FAILED=0         # any run with errors or any setup that did not start
declare -A VAL P50 P99 ERR NOTE CPU CPUU
ROWS=()          # "scenario|setup|metric" in table order

cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null
    done
    sleep 0.2
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# children get a high open-files limit (S4 holds 2 x N sockets per server)
ulimit -Hn 65536 2>/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
S4_NOTE=""
# A server needs 2 descriptors per relayed session, and stunnel admits at
# most limit*125/256 clients: keep S4 below 45% of the limit for every peer.
if [ "$NOFILE" != unlimited ] && [ $((S4_N * 100)) -gt $((NOFILE * 45)) ]; then
    S4_NOTE="$S4_N requested; open files limit $NOFILE (hard limit, cannot be raised here) caps S4 at $((NOFILE * 45 / 100))"
    S4_N=$((NOFILE * 45 / 100))
    log "$S4_NOTE"
fi

SRV_PIN=()
LOAD_PIN=()
if [ "$PIN" != 0 ]; then
    if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
        [ "$PIN" = 1 ] && SRV_PIN=(taskset -c 0)
        LOAD_PIN=(taskset -c 1)
    else
        log "--pin/--pin-load need taskset and 2 CPUs; not pinning"
        PIN=0
    fi
fi

S5_PINNED=0
if [ "${S5_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    S5_PINNED=1
fi

# ---------------------------------------------------------------- ports
USED_PORTS=" "
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q .; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}
SINK_PORT=$(free_port)
SRV_PORT=$(free_port)
AUX_PORT=$(free_port)   # stunnel chain middle hop, nginx auth_http

# ---------------------------------------------------------------- certs
gen_certs() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -keyout "$T/ec.key" -out "$T/ec.crt" -days 2 \
        -subj /CN=localhost >/dev/null 2>&1 &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/rsa.key" \
        -out "$T/rsa.crt" -days 2 -subj /CN=localhost >/dev/null 2>&1
}
gen_certs || { log "cannot create certificates"; exit 1; }

# ---------------------------------------------------------------- processes
# start_bg NAME CMD... - start a server in the background, log to T/NAME.log
start_bg() {
    local name=$1
    shift
    "${SRV_PIN[@]}" "$@" >"$T/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_port PORT PID NAME - until PORT listens on 127.0.0.1; 0 or 1
wait_port() {
    local port=$1 pid=$2 name=$3 i
    for i in $(seq 1 100); do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    log "$name did not start listening on $port; log:"
    tail -n 20 "$T/$name.log" >&2
    return 1
}

stop_all() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null
    done
    PIDS=()
    SERVER_PIDS=""
    SINK_PID=""
}

# start_sink tls|plain
start_sink() {
    local tls=()
    [ "$1" = tls ] && tls=(--cert "$T/ec.crt" --key "$T/ec.key")
    start_bg sink "$SMTP_SINK_BIN" -p "$SINK_PORT" "${tls[@]}"
    SINK_PID=$LAST_PID
    wait_port "$SINK_PORT" "$LAST_PID" sink
}

# proxy_ini none|encrypt CERTNAME LIMITS(0|1) - the proxy's configuration.
# All load comes from 127.0.0.1, and S4 holds thousands of sessions, so
# the per-address and total connection limits are lifted (the peers have
# none by default); the bench measures cost, not admission control.
proxy_ini() {
    echo "[proxy]"
    echo "log_level = warn"
    [ -n "${PROXY_WORKERS:-}" ] && echo "workers = $PROXY_WORKERS"
    echo "[bench]"
    echo "listen = 127.0.0.1:$SRV_PORT"
    echo "backend = 127.0.0.1:$SINK_PORT"
    echo "client_tls = may"
    echo "cert = $T/$2.crt"
    echo "key = $T/$2.key"
    echo "backend_tls = $1"
    echo "idle_timeout = 3600"
    if [ "$3" = 1 ]; then
        echo "max_connections = 1000000"
        echo "max_connections_per_ip = 0"
    fi
}

# start_proxy none|encrypt CERTNAME
start_proxy() {
    local ini=$T/proxy.ini
    proxy_ini "$1" "$2" 1 >"$ini"
    if ! "$STARTTLS_PROXY_BIN" -t -c "$ini" >"$T/proxy-check.log" 2>&1; then
        # an older proxy without the limit keys
        proxy_ini "$1" "$2" 0 >"$ini"
        if ! "$STARTTLS_PROXY_BIN" -t -c "$ini" >>"$T/proxy-check.log" 2>&1; then
            log "proxy configuration rejected:"
            cat "$T/proxy-check.log" >&2
            return 1
        fi
    fi
    start_bg proxy "$STARTTLS_PROXY_BIN" -c "$ini"
    SERVER_PIDS=$LAST_PID
    wait_port "$SRV_PORT" "$LAST_PID" proxy
}

# start_stunnel server|chain CERTNAME
start_stunnel() {
    local conf=$T/stunnel.conf
    [ -n "$STUNNEL" ] || { log "stunnel not installed"; return 2; }
    {
        echo "foreground = yes"
        echo "pid ="
        echo "syslog = no"
        echo "debug = warning"
        echo "[smtp-in]"
        echo "accept = 127.0.0.1:$SRV_PORT"
        echo "protocol = smtp"
        echo "cert = $T/$2.crt"
        echo "key = $T/$2.key"
        if [ "$1" = server ]; then
            echo "connect = 127.0.0.1:$SINK_PORT"
        else
            echo "connect = 127.0.0.1:$AUX_PORT"
            echo "[smtp-out]"
            echo "client = yes"
            echo "accept = 127.0.0.1:$AUX_PORT"
            echo "connect = 127.0.0.1:$SINK_PORT"
            echo "protocol = smtp"
        fi
    } >"$conf"
    start_bg stunnel "$STUNNEL" "$conf"
    SERVER_PIDS=$LAST_PID
    wait_port "$SRV_PORT" "$LAST_PID" stunnel || return 1
    if [ "$1" = chain ]; then wait_port "$AUX_PORT" "$LAST_PID" stunnel; fi
}

# start_nginx CERTNAME - mail proxy, its auth_http answered by itself
start_nginx() {
    local d=$T/nginx
    [ -n "$NGINX" ] || { log "nginx not installed"; return 2; }
    [ -f "$NGINX_MAIL_MOD" ] || { log "missing $NGINX_MAIL_MOD (apt-get install libnginx-mod-mail)"; return 2; }
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
load_module $NGINX_MAIL_MOD;
user root;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 32768; }
http {
  access_log off;
  client_body_temp_path $d/tmp;
  proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp;
  scgi_temp_path $d/tmp;
  server {
    listen 127.0.0.1:$AUX_PORT;
    location / {
      add_header Auth-Status OK;
      add_header Auth-Server 127.0.0.1;
      add_header Auth-Port $SINK_PORT;
      return 204;
    }
  }
}
mail {
  server_name mx.bench.invalid;
  auth_http 127.0.0.1:$AUX_PORT/auth;
  ssl_certificate $T/$1.crt;
  ssl_certificate_key $T/$1.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$SRV_PORT;
    protocol smtp;
    smtp_auth none;
    xclient off;
    starttls on;
  }
}
EOF
    start_bg nginx "$NGINX" -p "$d" -c "$d/nginx.conf"
    SERVER_PIDS=$LAST_PID
    wait_port "$SRV_PORT" "$LAST_PID" nginx && wait_port "$AUX_PORT" "$LAST_PID" nginx
}

# start_setup SETUP CERTNAME - sink plus the server in front of it;
# LOAD_PORT and LOAD_TLS tell the load generator where and how to go
start_setup() {
    local setup=$1 cert=$2
    SERVER_PIDS=""
    LOAD_PORT=$SRV_PORT
    LOAD_TLS=(--starttls)
    case "$setup" in
    direct)       start_sink plain || return 1
                  LOAD_PORT=$SINK_PORT; LOAD_TLS=(); SERVER_PIDS=$LAST_PID ;;
    direct-tls)   start_sink tls || return 1
                  LOAD_PORT=$SINK_PORT; SERVER_PIDS=$LAST_PID ;;
    proxy)        start_sink plain || return 1; start_proxy none "$cert" ;;
    proxy-tls)    start_sink tls || return 1; start_proxy encrypt "$cert" ;;
    stunnel)      start_sink plain || return 1; start_stunnel server "$cert" ;;
    stunnel-chain) start_sink tls || return 1; start_stunnel chain "$cert" ;;
    nginx)        start_sink plain || return 1; start_nginx "$cert" ;;
    *) log "unknown setup $setup"; return 1 ;;
    esac
}

setup_label() {
    case "$1" in
    direct) echo "direct to sink (no TLS)" ;;
    direct-tls) echo "direct TLS to sink" ;;
    proxy) echo "starttls-proxy (backend plain)" ;;
    proxy-tls) echo "starttls-proxy (backend_tls=encrypt)" ;;
    stunnel) echo "stunnel protocol=smtp" ;;
    stunnel-chain) echo "stunnel chain (server -> client)" ;;
    nginx) echo "nginx mail starttls" ;;
    nginx-open) echo "nginx mail, after RCPT (backend open)" ;;
    *) echo "$1" ;;
    esac
}

# kv KEY LINE - value of KEY=... in a result line
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# cpu_ticks PIDS - CPU time (utime + stime, clock ticks) of the processes,
# every thread included, plus their live children (nginx's workers) and
# the children they have reaped; 0 for none
cpu_ticks() {
    local p c total=0 t
    for p in $1; do
        for c in $p $(pgrep -P "$p" 2>/dev/null); do
            # the fields after "(comm) ": 12 utime, 13 stime, 14 cutime,
            # 15 cstime (man 5 proc: 14-17)
            t=$(sed 's/^.*) //' "/proc/$c/stat" 2>/dev/null |
                awk '{print $12 + $13 + $14 + $15}')
            total=$((total + ${t:-0}))
        done
    done
    echo "$total"
}

# run_load ID ARGS... - run the load generator; result line in RESULT,
# with the server's and the sink's CPU seconds during the run appended
# (srv_cpu_s=, sink_cpu_s=; the server is SERVER_PIDS, for the direct
# setups the sink itself)
run_load() {
    local id=$1 rc c0 c1 k0 k1
    shift
    c0=$(cpu_ticks "$SERVER_PIDS")
    k0=$(cpu_ticks "${SINK_PID:-}")
    "${LOAD_PIN[@]}" "$SMTP_LOAD_BIN" -p "$LOAD_PORT" "$@" \
        >"$T/$id.out" 2>"$T/$id.err"
    rc=$?
    c1=$(cpu_ticks "$SERVER_PIDS")
    k1=$(cpu_ticks "${SINK_PID:-}")
    RESULT=$(tail -n 1 "$T/$id.out")
    [ -n "$RESULT" ] && RESULT="$RESULT srv_cpu_s=$(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / h}') sink_cpu_s=$(awk -v a="$k0" -v b="$k1" -v h="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / h}') loadavg=$(cut -d' ' -f1 /proc/loadavg)"
    if [ "$rc" != 0 ] || [ -z "$RESULT" ]; then
        log "$id: load generator failed (exit $rc):"
        grep -v '^smtp-load: [0-9]* sessions' "$T/$id.err" | head -n 12 >&2
        return 1
    fi
    local info
    info=$(grep -o 'TLSv[0-9.]* [A-Z0-9_-]* group=[a-zA-Z0-9]*' "$T/$id.err" | head -n 1)
    [ -n "$info" ] && TLS_SEEN["$info"]=1
    return 0
}
declare -A TLS_SEEN

# cpu_per KIND LINE - the server's CPU per unit of work of a result line:
# us per session (sessions), s per GB of message (mbytes), us per NOOP
# round trip (rtt); empty when no work was done
cpu_per() {
    local cpu
    cpu=$(kv srv_cpu_s "$2")
    case "$1" in
    sessions) awk -v c="$cpu" -v n="$(kv sessions "$2")" 'BEGIN { if (n > 0) printf "%.0f", c * 1e6 / n }' ;;
    mbytes) awk -v c="$cpu" -v n="$(kv bytes "$2")" 'BEGIN { if (n > 0) printf "%.2f", c * 1e9 / n }' ;;
    rtt) awk -v c="$cpu" -v n="$S5_K" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n }' ;;
    esac
}
# the sink's CPU per session (the same work behind every setup)
sink_per() {
    awk -v c="$(kv sink_cpu_s "$1")" -v n="$(kv sessions "$1")" 'BEGIN { if (n > 0) printf "%.0f", c * 1e6 / n }'
}

# run_median ID KEY ARGS... - run the load REPEAT times against the running
# setup; RESULT is the run whose KEY is the median, RUNS lists every KEY
# (KEY cpu:KIND: the server's CPU per unit, see cpu_per).  Fails as soon
# as one run fails.
run_median() {
    local id=$1 key=$2 n pick v
    shift 2
    local -a lines=()
    RUNS=""
    for n in $(seq 1 "$REPEAT"); do
        run_load "$id-$n" "$@" || return 1
        case "$key" in
        cpu:*) v=$(cpu_per "${key#cpu:}" "$RESULT") ;;
        *) v=$(kv "$key" "$RESULT") ;;
        esac
        lines+=("${v:-0} $RESULT")
        RUNS="$RUNS${RUNS:+ }$v"
    done
    pick=$(printf '%s\n' "${lines[@]}" | sort -g -k1,1 | sed -n "$(((REPEAT + 1) / 2))p")
    RESULT=${pick#* }
}

# record SCEN SETUP METRIC VALUE [P50 P99 ERRORS NOTE CPU CPU_UNIT]
record() {
    local key="$1|$2|$3"
    ROWS+=("$key")
    VAL[$key]=$4
    P50[$key]=${5:-}
    P99[$key]=${6:-}
    ERR[$key]=${7:-}
    NOTE[$key]=${8:-}
    CPU[$key]=${9:-}
    CPUU[$key]=${10:-}
}

# fail_row SCEN SETUP METRIC WHY - a setup that did not work
fail_row() {
    FAILED=1
    record "$1" "$2" "$3" "FAILED" "" "" "" "$4"
}

# setup_or_fail SCEN ROW METRIC CERT [SETUP] - start SETUP (default ROW);
# on failure stop everything and record why in ROW (missing software only
# skips the row when BENCH_ALLOW_MISSING=1).  0 when the setup runs.
setup_or_fail() {
    local rc
    start_setup "${5:-$2}" "$4"
    rc=$?
    [ "$rc" = 0 ] && return 0
    stop_all
    if [ "$rc" = 2 ] && [ "${BENCH_ALLOW_MISSING:-0}" = 1 ]; then
        record "$1" "$2" "$3" "skipped" "" "" "" "not installed"
    elif [ "$rc" = 2 ]; then
        fail_row "$1" "$2" "$3" "not installed"
    else
        fail_row "$1" "$2" "$3" "did not start"
    fi
    return 1
}

# ---------------------------------------------------------------- scenarios
# throughput SCEN SETUP CERT METRIC(sessions|mbytes) ARGS...
throughput() {
    local scen=$1 setup=$2 cert=$3 metric=$4 id v
    shift 4
    id="$scen-$setup"
    log "$scen: $(setup_label "$setup") ..."
    setup_or_fail "$scen" "$setup" "$metric" "$cert" || return
    local key=sessions_per_s
    [ "$metric" = mbytes ] && key=mbytes_per_s
    if ! run_median "$id" "$key" "${LOAD_TLS[@]}" "$@"; then
        stop_all
        fail_row "$scen" "$setup" "$metric" "errors: $(kv errors "$RESULT")"
        return
    fi
    stop_all
    record_throughput "$scen" "$setup" "$metric"
}

# record_throughput SCEN SETUP METRIC - the row of a throughput run from
# RESULT (the median run) and RUNS (every run's key value)
record_throughput() {
    local scen=$1 setup=$2 metric=$3 v
    case "$metric" in
    sessions) v=$(kv sessions_per_s "$RESULT") ;;
    mbytes) v=$(kv mbytes_per_s "$RESULT") ;;
    esac
    local p50="" p99=""
    if [ "$metric" = sessions ]; then # session latency; meaningless in S3
        p50=$(kv p50_us "$RESULT")
        p99=$(kv p99_us "$RESULT")
    fi
    local note missed cu=us/session
    note="$(kv sessions "$RESULT") sessions, $(kv messages "$RESULT") msgs"
    [ "$metric" = mbytes ] && cu=s/GB
    case "$scen" in
    *F)
        missed=$(kv missed "$RESULT")
        note="$note; offered $(kv offered "$RESULT") at $RATE/s"
        if [ "${missed:-0}" != 0 ]; then
            note="$note, $missed missed: SATURATED, not at the offered rate"
        elif awk -v t="$(kv seconds "$RESULT")" -v d="$SECS" 'BEGIN { exit !(t > d * 1.1 + 0.5) }'; then
            # the offers end at SECS; sessions still finishing long after
            # are a queue the server did not keep up with
            note="$note: SATURATED, the last sessions ended $(kv seconds "$RESULT") s after the first offer"
        fi ;;
    esac
    case "$metric:$setup" in
    sessions:direct*) ;; # the sink is the server there
    sessions:*) note="$note; sink $(sink_per "$RESULT") us/session" ;;
    esac
    note="$note; load $(kv loadavg "$RESULT")"
    [ "$REPEAT" -gt 1 ] && note="$note; median of $RUNS"
    record "$scen" "$setup" "$metric" "$v" "$p50" "$p99" "$(kv errors "$RESULT")" \
        "$note" "$(cpu_per "$metric" "$RESULT")" "$cu"
}

# fixed_rate SCEN CERT "SETUPS" ARGS... - a fixed-rate scenario (S1F,
# S2F): REPEAT rounds, each starting every setup in turn for one run, so
# that a burst of other work on the machine falls on every setup alike
# rather than on one setup's repeats; each row is the run with the median
# CPU per session.  A setup that fails once is dropped from later rounds.
fixed_rate() {
    local scen=$1 cert=$2 setups=$3 n s pick v
    shift 3
    declare -A lines=() runs=() dead=()
    for n in $(seq 1 "$REPEAT"); do
        for s in $setups; do
            [ -n "${dead[$s]:-}" ] && continue
            log "$scen: $(setup_label "$s"), round $n of $REPEAT ..."
            if ! setup_or_fail "$scen" "$s" sessions "$cert"; then
                dead[$s]=1
                continue
            fi
            if ! run_load "$scen-$s-$n" "${LOAD_TLS[@]}" "$@"; then
                stop_all
                fail_row "$scen" "$s" sessions "errors: $(kv errors "$RESULT")"
                dead[$s]=1
                continue
            fi
            stop_all
            v=$(cpu_per sessions "$RESULT")
            lines[$s]="${lines[$s]:-}${v:-0} $RESULT"$'\n'
            runs[$s]="${runs[$s]:-}${runs[$s]:+ }$v"
        done
    done
    for s in $setups; do
        [ -n "${dead[$s]:-}" ] && continue
        pick=$(printf '%s' "${lines[$s]}" | sort -g -k1,1 | sed -n "$(((REPEAT + 1) / 2))p")
        RESULT=${pick#* }
        RUNS=${runs[$s]}
        record_throughput "$scen" "$s" sessions
    done
}

# rss_kib PIDS - VmRSS of the processes and their children, in KiB
rss_kib() {
    local total=0 p c r
    for p in $1; do
        for c in $p $(pgrep -P "$p" 2>/dev/null); do
            r=$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null)
            total=$((total + ${r:-0}))
        done
    done
    echo "$total"
}

# s4 SETUP [--open-txn] - RSS per idle TLS session
s4() {
    local setup=$1 label=$1 extra=() before after lpid i held rc
    if [ "${2:-}" = --open-txn ]; then extra=(--open-txn); label=$setup-open; fi
    log "S4: $(setup_label "$label"), $S4_N idle sessions ..."
    setup_or_fail S4 "$label" kib ec "$setup" || return
    # warm-up: one full session so lazy initialisation is in the baseline
    if ! run_load "S4-$label-warm" "${LOAD_TLS[@]}"; then
        stop_all
        fail_row S4 "$label" kib "warm-up session failed"
        return
    fi
    sleep 0.5
    before=$(rss_kib "$SERVER_PIDS")
    rm -f "$T/ready"
    "${LOAD_PIN[@]}" "$SMTP_LOAD_BIN" -p "$LOAD_PORT" "${LOAD_TLS[@]}" \
        --idle -c "$S4_N" "${extra[@]}" --ready-file "$T/ready" \
        --timeout 60 >"$T/S4-$label.out" 2>"$T/S4-$label.err" &
    lpid=$!
    PIDS+=("$lpid")
    local until=$((SECONDS + 60 + S4_N / 25))
    while [ "$SECONDS" -lt "$until" ]; do
        [ -f "$T/ready" ] && break
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -f "$T/ready" ]; then
        sleep 1 # let every server-side handshake and write settle
        after=$(rss_kib "$SERVER_PIDS")
    fi
    kill -TERM "$lpid" 2>/dev/null
    wait "$lpid"
    rc=$?
    RESULT=$(tail -n 1 "$T/S4-$label.out")
    stop_all
    held=$(kv held "$RESULT")
    if [ ! -f "$T/ready" ] || [ "$rc" != 0 ] || [ "${held:-0}" != "$S4_N" ]; then
        log "S4 $label: held ${held:-0} of $S4_N, exit $rc:"
        grep -v '^smtp-load: [0-9]* sessions' "$T/S4-$label.err" | head -n 12 >&2
        fail_row S4 "$label" kib "held ${held:-0}/$S4_N, errors $(kv errors "$RESULT")"
        return
    fi
    record S4 "$label" kib \
        "$(awk -v a="$after" -v b="$before" -v n="$S4_N" 'BEGIN {printf "%.1f", (a - b) / n}')" \
        "" "" "$(kv errors "$RESULT")" \
        "RSS $((before / 1024)) -> $((after / 1024)) MiB for $S4_N sessions"
}

# s5 SETUP - NOOP round trips on one TLS session (after MAIL and RCPT, so
# that every setup relays them to the sink).  Pinned by default (load on
# CPU 1, servers on CPU 0): unpinned, the figure depends mostly on whether
# the scheduler happens to put two hops on the same CPU (a cross-CPU
# wake-up costs tens of us in a VM), and flips between runs.
s5() {
    local setup=$1
    local -a save_srv=("${SRV_PIN[@]}") save_load=("${LOAD_PIN[@]}")
    if [ "$S5_PINNED" = 1 ]; then
        SRV_PIN=(taskset -c 0)
        LOAD_PIN=(taskset -c 1)
    fi
    s5_run "$setup"
    SRV_PIN=("${save_srv[@]}")
    LOAD_PIN=("${save_load[@]}")
}

s5_run() {
    local setup=$1
    log "S5: $(setup_label "$setup") ..."
    setup_or_fail S5 "$setup" rtt ec || return
    LOAD_TLS=(--starttls)
    if ! run_median "S5-$setup" p50_us --starttls -c 1 -n 1 --noop "$S5_K" --open-txn; then
        stop_all
        fail_row S5 "$setup" rtt "errors: $(kv errors "$RESULT")"
        return
    fi
    stop_all
    record S5 "$setup" rtt "$(kv p50_us "$RESULT")" "$(kv p50_us "$RESULT")" \
        "$(kv p99_us "$RESULT")" "$(kv errors "$RESULT")" "$S5_K NOOPs; load $(kv loadavg "$RESULT")$([ "$REPEAT" -gt 1 ] && echo "; median of p50 $RUNS")" \
        "$(cpu_per rtt "$RESULT")" us/NOOP
}

# ---------------------------------------------------------------- speed
declare -A SPEED
openssl_speed() {
    local out
    log "openssl speed ..."
    out=$(openssl speed -seconds 1 ecdsap256 rsa2048 ecdhx25519 2>/dev/null)
    SPEED[ecdsa_sign]=$(awk '/ecdsa \(nistp256\)/ {print $(NF-1)}' <<<"$out")
    SPEED[ecdsa_verify]=$(awk '/ecdsa \(nistp256\)/ {print $NF}' <<<"$out")
    SPEED[rsa_sign]=$(awk '/^rsa 2048 bits/ {print $(NF-1)}' <<<"$out")
    SPEED[rsa_verify]=$(awk '/^rsa 2048 bits/ {print $NF}' <<<"$out")
    SPEED[x25519]=$(awk '/ecdh \(X25519\)/ {print $NF}' <<<"$out")
    for c in aes-128-gcm aes-256-gcm; do
        out=$(openssl speed -evp "$c" -bytes 16384 -seconds 1 2>/dev/null)
        SPEED[$c]=$(awk 'toupper($1) == toupper("'"$c"'") {sub(/k$/, "", $2); printf "%.0f", $2 / 1000}' <<<"$out")
    done
}

# ---------------------------------------------------------------- run
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# what is measured is the proxy: mark the commit dirty only for its sources
if [ -n "$(git -C "$ROOT" status --porcelain -- proxy include CMakeLists.txt 2>/dev/null)" ]; then
    COMMIT="$COMMIT+dirty"
fi

openssl_speed

LOADARGS_S1=(-c "$S1C" -d "$SECS" -m 1 -s 4096)
if want S1; then
    for s in direct direct-tls proxy stunnel nginx; do
        throughput S1 "$s" ec sessions "${LOADARGS_S1[@]}"
    done
fi
if want S1R; then
    for s in direct-tls proxy stunnel nginx; do
        throughput S1R "$s" rsa sessions "${LOADARGS_S1[@]}"
    done
fi
if want S1F; then
    fixed_rate S1F ec "direct-tls proxy stunnel nginx" --rate "$RATE" -c "$RATE_CAP" -d "$SECS" -m 1 -s 4096
fi
if want S2; then
    for s in direct-tls proxy-tls stunnel-chain; do
        throughput S2 "$s" ec sessions -c "$S2C" -d "$SECS" -m 1 -s 4096
    done
fi
if want S2F; then
    fixed_rate S2F ec "direct-tls proxy-tls stunnel-chain" --rate "$RATE" -c "$RATE_CAP" -d "$SECS" -m 1 -s 4096
fi
if want S3; then
    for s in direct-tls proxy-tls stunnel-chain; do
        throughput S3 "$s" ec mbytes -c "$S3C" -d "$SECS" -m 1000000 -s "$S3_SIZE"
    done
fi
if want S4; then
    s4 proxy
    s4 proxy-tls
    s4 stunnel
    s4 nginx
    s4 nginx --open-txn
fi
if want S5; then
    for s in direct-tls proxy proxy-tls stunnel nginx; do
        s5 "$s"
    done
fi

# ---------------------------------------------------------------- table
scen_title() {
    case "$1" in
    S1) echo "S1 sessions/s, STARTTLS + one 4 KiB message, backend plain (c=$S1C, ECDSA P-256)" ;;
    S1R) echo "S1 with RSA-2048 (c=$S1C)" ;;
    S1F) echo "S1 at a fixed offered rate, $RATE sessions/s (at most $RATE_CAP open): compare the CPU per session" ;;
    S2) echo "S2 sessions/s, TLS on both legs (c=$S2C)" ;;
    S2F) echo "S2 at a fixed offered rate, $RATE sessions/s: compare the CPU per session" ;;
    S3) echo "S3 MB/s, $S3C connections, $((S3_SIZE / 1048576)) MiB messages, TLS both legs" ;;
    S4) echo "S4 KiB RSS per idle TLS session ($S4_N sessions${S4_NOTE:+; $S4_NOTE})" ;;
    S5) echo "S5 NOOP round trip, one TLS session, us$([ "$S5_PINNED" = 1 ] && echo ' (pinned: load on CPU 1, servers and sink on CPU 0)')" ;;
    esac
}
unit() {
    case "$1" in
    sessions) echo "sessions/s" ;; mbytes) echo "MB/s" ;; kib) echo "KiB/session" ;; rtt) echo "p50 us" ;;
    esac
}
# ref_field ARRAY SCEN SETUP - ARRAY's entry (VAL or CPU) for a row, empty
# if the row is absent, failed or skipped
ref_field() {
    local -n field=$1
    local r
    for r in "${ROWS[@]:-}"; do
        IFS='|' read -r s u m <<<"$r"
        if [ "$s" = "$2" ] && [ "$u" = "$3" ] && [ "${VAL[$r]}" != FAILED ] &&
            [ "${VAL[$r]}" != skipped ]; then
            echo "${field[$r]}"
            return
        fi
    done
}
# ref_value SCEN SETUP - value of a row; ref_cpu - server CPU per unit
ref_value() { ref_field VAL "$@"; }
ref_cpu() { ref_field CPU "$@"; }
ratio() { # a / b with 2 decimals, empty if either is missing
    [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}
proxy_setup_of() {
    case "$1" in S2|S2F|S3) echo proxy-tls ;; *) echo proxy ;; esac
}

table() {
    local r s u m prev="" pv
    echo
    echo "### starttls-proxy benchmark, $START, commit $COMMIT$([ "$QUICK" = 1 ] && echo ', QUICK mode (not a result)')"
    echo
    echo "Proxy binary: $STARTTLS_PROXY_BIN ($PROXY_ORIGIN)."
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr); load generator on the same machine$([ "$REPEAT" -gt 1 ] && echo ", median of $REPEAT runs per row (S4: one run)")$([ -n "$NICE" ] && echo ", everything at nice $NICE")$(case "$PIN" in 1) echo ', pinned: load on CPU 1, servers on CPU 0' ;; 2) echo ', load generator pinned to CPU 1, servers not pinned' ;; *) echo ', not pinned' ;; esac). Proxy workers: ${PROXY_WORKERS:-default (one per CPU)}; nginx worker_processes: $NGINX_WORKERS; stunnel: threads. Load average at start / end: $LOAD_START / $LOAD_END (other work on the machine makes the figures noisy). TLS seen: $(printf '%s; ' "${!TLS_SEEN[@]}")"
    echo
    echo "| Scenario | Setup | Value | Unit | p50 us | p99 us | Errors | x proxy | Server CPU | CPU unit | CPU x proxy | Notes |"
    # p50/p99: whole-session latency in S1/S2, NOOP round trip in S5
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|"
    local pc
    for r in "${ROWS[@]:-}"; do
        [ -n "$r" ] || continue
        IFS='|' read -r s u m <<<"$r"
        if [ "$s" != "$prev" ]; then
            echo "| **$(scen_title "$s")** | | | | | | | | | | | |"
            prev=$s
        fi
        pv=$(ref_value "$s" "$(proxy_setup_of "$s")")
        pc=$(ref_cpu "$s" "$(proxy_setup_of "$s")")
        echo "| $s | $(setup_label "$u") | ${VAL[$r]} | $(unit "$m") | ${P50[$r]} | ${P99[$r]} | ${ERR[$r]} | $(case "${VAL[$r]}" in FAILED|skipped) ;; *) ratio "${VAL[$r]}" "$pv" ;; esac) | ${CPU[$r]} | ${CPUU[$r]} | $(case "${VAL[$r]}" in FAILED|skipped) ;; *) ratio "${CPU[$r]}" "$pc" ;; esac) | ${NOTE[$r]} |"
    done
    echo
    echo "\"x proxy\" = value / value of starttls-proxy in the same scenario."
    echo "\"Server CPU\" = utime + stime from /proc of the server under test"
    echo "(every thread, and child processes: nginx's master and workers)"
    echo "during the load, per session (S1, S2), per GB of message relayed"
    echo "(S3) or per NOOP round trip (S5); for the direct rows the server is"
    echo "the sink itself. \"CPU x proxy\" = that / the proxy's in the same"
    echo "scenario (lower is cheaper). The S1F/S2F rows are at the same offered"
    echo "rate for every setup; a row marked SATURATED did not keep up with it."
    echo
    echo "| openssl speed (1 core) | rate |"
    echo "|---|---:|"
    echo "| ecdsap256 sign / verify | ${SPEED[ecdsa_sign]:-?} / ${SPEED[ecdsa_verify]:-?} per s |"
    echo "| rsa2048 sign / verify | ${SPEED[rsa_sign]:-?} / ${SPEED[rsa_verify]:-?} per s |"
    echo "| X25519 ecdh | ${SPEED[x25519]:-?} per s |"
    echo "| aes-128-gcm, 16 KiB blocks | ${SPEED[aes-128-gcm]:-?} MB/s |"
    echo "| aes-256-gcm, 16 KiB blocks | ${SPEED[aes-256-gcm]:-?} MB/s |"
    if [ -n "${SPEED[aes-256-gcm]:-}" ] && [ "${SPEED[aes-256-gcm]}" -gt 0 ] 2>/dev/null; then
        echo "| S3 floor for a TLS-to-TLS relay: two AES-256-GCM passes per byte (decrypt + encrypt) | $(awk -v r="${SPEED[aes-256-gcm]}" 'BEGIN {printf "%.2f", 2 * 1000 / r}') CPU s per GB |"
    fi
    echo
    targets
}

# target LINE NAME MEASURED GOAL CMP - one row of the targets table
target_row() {
    local name=$1 measured=$2 goal=$3 ok=$4
    if [ -z "$measured" ]; then ok="n/a"; fi
    echo "| $name | ${measured:-n/a} | $goal | $ok |"
}
meets() { awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN { if (a == "") exit 1; if (op == ">=") exit !(a >= b); exit !(a <= b) }' && echo met || echo "not met"; }
max2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" && b == "") exit; if (a == "") print b; else if (b == "") print a; else print (a > b ? a : b) }'; }

targets() {
    local r best m
    echo "| Target | Measured | Goal | |"
    echo "|---|---:|---|---|"
    if want S1; then
        best=$(max2 "$(ref_value S1 stunnel)" "$(ref_value S1 nginx)")
        r=$(ratio "$(ref_value S1 proxy)" "$best")
        target_row "S1 proxy / best of stunnel, nginx" "$r" ">= 1.3" "$(meets "$r" 1.3 '>=')"
    fi
    if want S1R; then
        best=$(max2 "$(ref_value S1R stunnel)" "$(ref_value S1R nginx)")
        r=$(ratio "$(ref_value S1R proxy)" "$best")
        target_row "S1 RSA-2048 proxy / best peer" "$r" ">= 1.3" "$(meets "$r" 1.3 '>=')"
    fi
    if want S1F; then
        r=$(ratio "$(ref_cpu S1F proxy)" "$(ref_cpu S1F nginx)")
        target_row "S1F proxy CPU per session / nginx's, same offered rate" "$r" "<= 0.75" "$(meets "$r" 0.75 '<=')"
    fi
    if want S2; then
        r=$(ratio "$(ref_value S2 proxy-tls)" "$(ref_value S2 stunnel-chain)")
        target_row "S2 proxy / stunnel chain" "$r" ">= 1.5" "$(meets "$r" 1.5 '>=')"
    fi
    if want S3; then
        r=$(ratio "$(ref_value S3 proxy-tls)" "$(ref_value S3 direct-tls)")
        target_row "S3 proxy / direct TLS MB/s" "$r" ">= 0.45" "$(meets "$r" 0.45 '>=')"
    fi
    if want S4; then
        m=$(ref_value S4 proxy)
        target_row "S4 proxy KiB per idle session" "$m" "<= 40" "$(meets "$m" 40 '<=')"
        best=$(awk -v a="$(ref_value S4 stunnel)" -v b="$(ref_value S4 nginx)" 'BEGIN { if (a == "" && b == "") exit; if (a == "") print b; else if (b == "") print a; else print (a < b ? a : b) }')
        if [ -n "$m" ] && [ -n "$best" ]; then
            target_row "S4 proxy below every peer (lowest peer $best)" "$m" "< $best" "$(awk -v a="$m" -v b="$best" 'BEGIN { print (a < b ? "met" : "not met") }')"
        fi
    fi
    if want S5; then
        r=$(ratio "$(ref_value S5 proxy)" "$(ref_value S5 direct-tls)")
        target_row "S5 proxy p50 / direct p50" "$r" "<= 2" "$(meets "$r" 2 '<=')"
    fi
}

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
TABLE=$(table)
echo "$TABLE"
if [ -n "$OUT" ]; then
    echo "$TABLE" >>"$OUT"
fi
if [ "$FAILED" != 0 ]; then
    log "some runs had errors or a setup failed to start: not a result"
    exit 1
fi
exit 0
