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
head -n 4 "$LOG"
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
