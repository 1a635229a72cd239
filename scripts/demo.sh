#!/usr/bin/env bash
# The demo behind `make demo`: start the embedded stack, simulate runs, wait until the
# sink has landed every delivered event, print a summary from ClickHouse, play the
# tool-outage scenario against the control loop and show what it decided, stop the stack.
# Leaves nothing running, whatever happens.
set -euo pipefail
export AGENTLEDGER_DATA_DIR="${DEMO_DIR:-.agentledger/demo}"
BIN="${BIN:-.venv/bin}"
RUNS="${DEMO_RUNS:-300}"
LOG="$AGENTLEDGER_DATA_DIR/up.log"
rm -rf "$AGENTLEDGER_DATA_DIR" && mkdir -p "$AGENTLEDGER_DATA_DIR"

"$BIN/agentledger" up > "$LOG" 2>&1 &
UP_PID=$!
trap 'kill -TERM $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  grep -q "agentledger is up" "$LOG" && break
  kill -0 $UP_PID 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
grep -q "agentledger is up" "$LOG" || { cat "$LOG"; echo "the stack did not start"; exit 1; }
# the stack's own lines (its children log to the same file)
sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$LOG" |
  grep -E "^(kafka bootstrap|clickhouse dsn|control policy|ledger api|otlp/http):" || true
echo

delivered=$("$BIN/agentledger" simulate --runs "$RUNS" --seed 42 --json \
  | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["events"])')
echo "simulated $RUNS runs: Kafka acknowledged $delivered events"

count() {
  "$BIN/agentledger" sql "SELECT count() AS n FROM events FINAL" --json \
    | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["n"])'
}
for _ in $(seq 1 300); do
  [ "$(count)" -ge "$delivered" ] && break
  sleep 0.2
done
echo "landed in ClickHouse: $(count) distinct events"
echo
"$BIN/agentledger" summary

echo
echo "scenario tool-outage: salesforce fails 80% for 90 s of event time; agents obey the guard"
"$BIN/agentledger" simulate --scenario tool-outage --seed 3
transitions() {
  "$BIN/agentledger" sql "SELECT count() AS n FROM control_signals FINAL WHERE kind = 'breaker' AND state = 'CLOSED'" --json \
    | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["n"])'
}
for _ in $(seq 1 150); do
  [ "$(transitions)" -ge 1 ] && break
  sleep 0.2
done
"$BIN/agentledger" sql "SELECT kind, scope, version, previous_state AS was, state, reason FROM control_signals FINAL ORDER BY ts, kind"

echo
echo "finance: what a successful task earns, then margins over the last day"
for tenant in acme globex initech; do
  "$BIN/agentledger" revenue set "$tenant" ticket_triage 0.40 --note demo > /dev/null
  "$BIN/agentledger" revenue set "$tenant" crm_update 1.10 --note demo > /dev/null
  "$BIN/agentledger" revenue set "$tenant" refund_with_approval 2.50 --note demo > /dev/null
done
"$BIN/agentledger" margins --by workflow --since 1d

echo
echo "incident: the first run the salesforce breaker refused, told as a timeline"
run=$("$BIN/agentledger" search --text breaker_open --outcome aborted --oldest-first --limit 1 --json \
  | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["events"][0]["run_id"])')
"$BIN/agentledger" trace "$run"
"$BIN/agentledger" verify "$run"
"$BIN/agentledger" replay "$run" -o "$AGENTLEDGER_DATA_DIR/replay.json"
"$BIN/agentledger" health || [ $? -eq 2 ]

echo
echo "the dashboards' panels as a static page of charts (no Grafana needed):"
# the scenario runs in event time, a few minutes ahead of the wall clock
"$BIN/agentledger" report -o "$AGENTLEDGER_DATA_DIR/report.html" --since 1h \
  --until "$(date -u -d '+15 min' +%Y-%m-%dT%H:%M:%S)"
