#!/usr/bin/env bash
# Fuzzes the API against its own OpenAPI document with schemathesis, every
# check on (what `--checks all` selects: every request the document allows
# must be accepted, every one it forbids refused, every answer must match
# it), once per store:
#
#   1. builds the server example (debug, or PROFILE=release);
#   2. starts it on the embedded memory store (port $MEM_PORT, 8801) and on a
#      scratch PostgreSQL database it creates (port $PG_PORT, 8802), both with
#      --dispatch-delay-ms 0 and private webhook destinations allowed (a
#      callback_url naming a private address is refused by policy otherwise,
#      which no schema can say);
#   3. runs schemathesis against each (coverage, fuzzing and stateful phases)
#      with scripts/schemathesis.toml (each check it narrows is explained
#      there);
#   4. prints a summary, stops both servers, drops the database, and exits
#      non-zero when either run found a failure.
#
# Not part of CI (schemathesis is not installed there). Needs schemathesis 4.x
# (`pip install schemathesis`), psql and curl. Usage:
#   scripts/schemathesis.sh                  EXAMPLES=100 SEED=1 by default
#   DATABASE_URL=postgres://user@host:5432/postgres scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ADMIN_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
MEM_PORT="${MEM_PORT:-8801}"
PG_PORT="${PG_PORT:-8802}"
EXAMPLES="${EXAMPLES:-100}"
SEED="${SEED:-1}"
PROFILE="${PROFILE:-debug}"
DB="aiopslab_schemathesis_$$"
WORK="$(mktemp -d)"
PIDS=()
DB_CREATED=""

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() {
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ -n "$DB_CREATED" ]]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in schemathesis psql curl; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
schemathesis --version | grep -q 'version 4\.' || fail "needs schemathesis 4.x, found: $(schemathesis --version)"
for port in "$MEM_PORT" "$PG_PORT"; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then
    fail "something already answers on port $port; stop it or set MEM_PORT/PG_PORT"
  fi
done

if [[ "$PROFILE" == release ]]; then
  cargo build --release -p aiopslab-cli
else
  cargo build -p aiopslab-cli
fi
SERVER="target/$PROFILE/aiopslab"

psql "$ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
DB_CREATED=1
# The scratch database's URL: the admin URL with its database name replaced.
DB_URL="$(printf '%s' "$ADMIN_URL" | sed -E "s#^(postgres(ql)?://[^/]*)(/[^?]*)?#\1/$DB#")"

start() { # name port [server flags...]
  local name="$1" port="$2"
  shift 2
  AIOPSLAB_WEBHOOK_ALLOW_PRIVATE=1 "$SERVER" serve --port "$port" --dispatch-delay-ms 0 "$@" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/$name.log"; fail "$name server exited at start"; }
    sleep 0.1
  done
  fail "$name server did not answer /health"
}
start memory "$MEM_PORT"
start postgres "$PG_PORT" --database-url "$DB_URL"

status=0
declare -A RESULT
for name in memory postgres; do
  port="$MEM_PORT"
  [[ "$name" == postgres ]] && port="$PG_PORT"
  printf '\n== schemathesis against the %s store (port %s)\n' "$name" "$port"
  set +e
  # No `--checks all` on the command line: every check is on by default (the
  # same set), and the command-line option would override the per-operation
  # entries of the config file.
  schemathesis --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --workers 1 --max-examples "$EXAMPLES" --seed "$SEED" 2>&1 | tee "$WORK/$name.out"
  code=${PIPESTATUS[0]}
  set -e
  cases="$(grep -A1 '^Test cases:' "$WORK/$name.out" | tail -n1 | sed 's/^ *//')"
  verdict="$(grep -E '^=+ .* in [0-9.]+s =+$' "$WORK/$name.out" | tail -n1 | sed -E 's/^=+ (.*) =+$/\1/')"
  RESULT[$name]="exit $code; ${cases:-no test cases}; ${verdict:-no verdict}"
  [[ "$code" == 0 ]] || status=1
done

printf '\n== summary (schemathesis %s, %s examples per operation, seed %s)\n' \
  "$(schemathesis --version | sed 's/.*version //')" "$EXAMPLES" "$SEED"
for name in memory postgres; do
  printf '%-8s  %s\n' "$name" "${RESULT[$name]}"
done
if [[ "$status" == 0 ]]; then
  echo "schemathesis: ok"
else
  echo "schemathesis: FAILED"
fi
exit "$status"
