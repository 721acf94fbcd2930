#!/usr/bin/env bash
# A local Synapse homeserver for squall's Matrix tests.
#
#   scripts/testenv/synapse.sh up      install (cached venv), configure, start, register users; prints env lines
#   scripts/testenv/synapse.sh start   start it again with the existing config and data
#   scripts/testenv/synapse.sh stop    stop it (TERM, then KILL after 10 s)
#   scripts/testenv/synapse.sh env     print the env lines of a running server
#
# Everything stays under $SQUALL_TESTENV (default /tmp/squall-testenv); the
# virtualenv is cached in $SQUALL_TESTENV_CACHE (default ~/.cache/squall-testenv)
# and reused. Binds 127.0.0.1:${SYNAPSE_PORT:-8008} only; SQLite database in
# $SYNAPSE_DB_DIR (default: the state dir; use /dev/shm/... for benchmarks);
# no federation; rate limits off; shared-secret registration.
set -euo pipefail
ENV_DIR=${SQUALL_TESTENV:-/tmp/squall-testenv}
CACHE=${SQUALL_TESTENV_CACHE:-$HOME/.cache/squall-testenv}
DIR=$ENV_DIR/synapse
VENV=$CACHE/synapse-venv
PORT=${SYNAPSE_PORT:-8008}
HS=http://127.0.0.1:$PORT
DB_DIR=${SYNAPSE_DB_DIR:-$DIR}
PY=$VENV/bin/python

healthy() { [ "$(curl -s --max-time 2 "$HS/health" 2>/dev/null)" = OK ]; }

install() {
  if [ -x "$PY" ] && "$PY" -c 'import synapse' 2>/dev/null; then return; fi
  echo "installing Synapse into $VENV (one time)..." >&2
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check matrix-synapse >&2
}

configure() {
  mkdir -p "$DIR" "$DB_DIR"
  [ -f "$DIR/secret" ] || openssl rand -hex 32 > "$DIR/secret"
  local secret; secret=$(cat "$DIR/secret")
  local limits=""
  for key in rc_message rc_registration rc_registration_token_validity rc_admin_redaction \
             rc_joins_per_room rc_3pid_validation rc_third_party_invite rc_media_create \
             rc_delayed_event_mgmt rc_room_creation rc_reports rc_user_directory rc_profile rc_key_requests; do
    limits+="$key: {per_second: 100000, burst_count: 1000000}"$'\n'
  done
  cat > "$DIR/homeserver.yaml" <<YAML
server_name: "localhost"
public_baseurl: "$HS/"
pid_file: "$DIR/homeserver.pid"
listeners:
  - {port: $PORT, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: false,
     resources: [{names: [client], compress: false}]}
database: {name: sqlite3, args: {database: $DB_DIR/homeserver.db}}
log_config: "$DIR/log.config"
media_store_path: "$DIR/media_store"
signing_key_path: "$DIR/localhost.signing.key"
registration_shared_secret: "$secret"
macaroon_secret_key: "$secret-macaroon"
form_secret: "$secret-form"
report_stats: false
enable_registration: false
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
url_preview_enabled: false
presence: {enabled: false}
caches: {sync_response_cache_duration: 0}
rc_login:
  address: {per_second: 100000, burst_count: 1000000}
  account: {per_second: 100000, burst_count: 1000000}
  failed_attempts: {per_second: 100000, burst_count: 1000000}
rc_joins:
  local: {per_second: 100000, burst_count: 1000000}
  remote: {per_second: 100000, burst_count: 1000000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 1000000}
  per_user: {per_second: 100000, burst_count: 1000000}
  per_issuer: {per_second: 100000, burst_count: 1000000}
rc_presence:
  per_user: {per_second: 100000, burst_count: 1000000}
$limits
YAML
  cat > "$DIR/log.config" <<YAML
version: 1
formatters: {precise: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $DIR/homeserver.log}}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
YAML
  [ -f "$DIR/localhost.signing.key" ] || (cd "$DIR" && "$PY" -m synapse.app.homeserver -c homeserver.yaml --generate-keys >/dev/null 2>&1)
}

ours() { [ -f "$DIR/run.pid" ] && kill -0 "$(cat "$DIR/run.pid")" 2>/dev/null; }

start() {
  if healthy; then
    ours && return
    # Another homeserver (another test environment's) has the port: its users
    # are not ours, and every login would be refused.
    echo "a homeserver this script did not start answers at $HS; stop it or set SYNAPSE_PORT" >&2
    exit 1
  fi
  # A plain background command (no subshell around it), with every stream
  # redirected: whoever captures this script's output must not wait on Synapse.
  pushd "$DIR" >/dev/null
  nohup "$PY" -m synapse.app.homeserver -c homeserver.yaml > "$DIR/stdout.log" 2>&1 < /dev/null &
  echo $! > "$DIR/run.pid"
  popd >/dev/null
  for _ in $(seq 1 300); do
    healthy && return
    sleep 0.1
  done
  echo "Synapse did not become healthy at $HS; see $DIR/homeserver.log and $DIR/stdout.log" >&2
  exit 1
}

stop() {
  [ -f "$DIR/run.pid" ] || return 0
  local pid; pid=$(cat "$DIR/run.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/run.pid"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$DIR/run.pid"
}

# register USER PASS -> writes $DIR/users/USER.password (login happens in the tests)
register() {
  local user=$1 pass=$2 secret nonce mac
  mkdir -p "$DIR/users"
  [ -f "$DIR/users/$user.password" ] && return
  secret=$(cat "$DIR/secret")
  nonce=$(curl -s "$HS/_synapse/admin/v1/register" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nonce"])')
  mac=$(printf '%s\0%s\0%s\0%s' "$nonce" "$user" "$pass" notadmin | openssl dgst -sha1 -hmac "$secret" | awk '{print $NF}')
  local answer
  answer=$(curl -s -XPOST "$HS/_synapse/admin/v1/register" -H 'Content-Type: application/json' \
    -d "{\"nonce\":\"$nonce\",\"username\":\"$user\",\"password\":\"$pass\",\"admin\":false,\"mac\":\"$mac\"}")
  case "$answer" in
    *user_id*|*M_USER_IN_USE*) printf '%s' "$pass" > "$DIR/users/$user.password" ;;
    *) echo "registering $user failed: $answer" >&2; exit 1 ;;
  esac
}

print_env() {
  echo "export SQUALL_TEST_MATRIX_HOMESERVER=$HS"
  echo "export SQUALL_TEST_MATRIX_BOT_USER=squallbot"
  echo "export SQUALL_TEST_MATRIX_BOT_PASSWORD=$(cat "$DIR/users/squallbot.password")"
  echo "export SQUALL_TEST_MATRIX_HUMAN_USER=alice"
  echo "export SQUALL_TEST_MATRIX_HUMAN_PASSWORD=$(cat "$DIR/users/alice.password")"
  echo "export SQUALL_TEST_MATRIX_ECHO_USER=echobot"
  echo "export SQUALL_TEST_MATRIX_ECHO_PASSWORD=$(cat "$DIR/users/echobot.password")"
  echo "export SQUALL_TEST_MATRIX_CTL=$(cd "$(dirname "$0")" && pwd)/synapse.sh"
}

case "${1:-up}" in
  up)
    install
    configure
    start
    register squallbot "bot-$(cat "$DIR/secret" | cut -c1-12)"
    register alice "alice-$(cat "$DIR/secret" | cut -c13-24)"
    register echobot "echo-$(cat "$DIR/secret" | cut -c25-36)"
    print_env ;;
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 up|start|stop|env" >&2; exit 2 ;;
esac
