#!/usr/bin/env bash
# The quickstart, end to end, against the README's first command:
#
#   1. builds and starts `aiopslab serve --workers 2` (embedded store, simulated
#      workers) on port 8000, as the quickstart writes it (or $PORT);
#   2. runs the quickstart's Python end-to-end script, taken verbatim from
#      docs/quickstart.md (the user's document, kept verbatim in the
#      repository), $RUNS times in a row (default 20);
#   3. runs the quickstart's curl commands (submit, status, list, results,
#      workers), the load test's ten concurrent submissions and the jq grouping;
#   4. stops the server with SIGTERM and checks that it exits cleanly.
#
# Needs python3 with `requests`, curl and jq. Usage:
#   scripts/quickstart_e2e.sh [RUNS]      QUICKSTART=path/to/quickstart.md to override
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-${RUNS:-20}}"
QUICKSTART="${QUICKSTART:-docs/quickstart.md}"
WORK="$(mktemp -d)"
SERVER_PID=""

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in python3 curl jq; do
  command -v "$tool" >/dev/null || fail "$tool is required (apt-get install $tool)"
done
python3 -c 'import requests' 2>/dev/null || fail "python3 needs requests (pip install requests)"
[[ -f "$QUICKSTART" ]] || fail "quickstart not found at $QUICKSTART (set QUICKSTART=...)"

# The end-to-end script exactly as the quickstart writes it.
python3 - "$QUICKSTART" "$WORK/quickstart_e2e.py" <<'EOF'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
start = text.index("```python\n") + len("```python\n")
open(sys.argv[2], "w", encoding="utf-8").write(text[start:text.index("```", start)])
EOF

# The quickstart talks to localhost:8000; use it unless it is taken.
PORT="${PORT:-8000}"
if curl -s -o /dev/null "http://localhost:$PORT/health"; then
  fail "something already answers on port $PORT; stop it or set PORT"
fi
BASE="http://localhost:$PORT"

log "cargo build --release -p aiopslab-cli"
cargo build --release -p aiopslab-cli
log "starting: aiopslab serve --workers 2 --port $PORT"
target/release/aiopslab serve --workers 2 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "$BASE/health" >/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; fail "server exited at start"; }
  sleep 0.1
done
curl -sf "$BASE/health" >/dev/null || fail "server did not answer /health"

# The Python script hard-codes BASE_URL = "http://localhost:8000".
if [[ "$PORT" != 8000 ]]; then
  sed -i "s#http://localhost:8000#$BASE#" "$WORK/quickstart_e2e.py"
fi

log "quickstart end-to-end script, $RUNS runs"
passed=0
for run in $(seq 1 "$RUNS"); do
  if python3 "$WORK/quickstart_e2e.py" >"$WORK/e2e.out" 2>&1; then
    passed=$((passed + 1))
    printf 'run %2d: passed (%s)\n' "$run" "$(head -n1 "$WORK/e2e.out")"
  else
    printf 'run %2d: FAILED\n' "$run"
    cat "$WORK/e2e.out"
  fi
done
echo "e2e: $passed passed, $((RUNS - passed)) failed"
[[ "$passed" == "$RUNS" ]] || fail "the end-to-end script failed"

log "curl: submit a task"
created=$(curl -s -X POST "$BASE/tasks" \
  -H "Content-Type: application/json" \
  -d '{
    "problem_id": "misconfig_app_hotel_res-detection-1",
    "agent_config": {
      "model": "gpt-4",
      "temperature": 0.7
    },
    "max_steps": 30,
    "timeout_minutes": 30
  }')
echo "$created" | jq .
id=$(echo "$created" | jq -r .id)
[[ $(echo "$created" | jq -r .status) == pending ]] || fail "new task is not pending"

log "curl: check task status"
sleep 3
curl -s "$BASE/tasks/$id" | jq .

log "curl: list tasks"
curl -s "$BASE/tasks?status=pending&limit=10" | jq '{total, limit, offset, tasks: (.tasks | length)}'

log "curl: task results with logs"
for _ in $(seq 1 30); do
  status=$(curl -s "$BASE/tasks/$id" | jq -r .status)
  [[ "$status" == completed ]] && break
  sleep 1
done
[[ "$status" == completed ]] || fail "task $id ended $status"
curl -s "$BASE/tasks/$id?include_logs=true" | jq '{id, status, result, completed_at, logs: (.logs | length)}'

log "curl: workers"
curl -s "$BASE/workers" | jq .
curl -s "$BASE/workers" | jq '.workers | map({id: .id, status: .status, tasks: .tasks_completed})'

log "load test: 10 concurrent submissions with random priorities"
# (a plain `wait` would also wait for the server: wait for the curls only)
curls=()
for i in {1..10}; do
  curl -s -o "$WORK/load_$i.json" -w '%{http_code}\n' -X POST "$BASE/tasks" \
    -H "Content-Type: application/json" \
    -d '{
      "problem_id": "misconfig_app_hotel_res-detection-'$i'",
      "priority": '$((RANDOM % 10))'
    }' >"$WORK/load_$i.code" &
  curls+=($!)
done
wait "${curls[@]}"
cat "$WORK"/load_*.code | sort | uniq -c
[[ $(cat "$WORK"/load_*.code | grep -c '^201$') == 10 ]] || fail "not every submission got 201"
jq -s -c 'map({problem_id, priority: .parameters.priority})' "$WORK"/load_*.json
for _ in 1 2 3; do
  curl -s "$BASE/tasks?limit=100" | jq -c ".tasks | group_by(.status) | map({status: .[0].status, count: length})"
  sleep 1
done

log "stopping the server (SIGTERM)"
kill -TERM "$SERVER_PID"
code=0
wait "$SERVER_PID" || code=$?
SERVER_PID=""
[[ "$code" == 0 ]] || { tail -n 20 "$WORK/server.log"; fail "server exited with status $code"; }
echo "server stopped cleanly"
echo "quickstart e2e: ok"
