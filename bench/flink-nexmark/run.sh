#!/usr/bin/env bash
# Nexmark on Flink 2.2 (in-process MiniCluster, parallelism 1, checkpoints every 1 s, hashmap state):
# runs each query in turn over EVENTS generated events into a discarding sink and prints
#   METRIC<TAB>flink nexmark <query><TAB><events per second>
# Env: EVENTS (10000000), QUERIES ("q0 q1 q2 q3 q5 q7 q8"), EVENT_RATE (event-time events/s for
# q0-q3, 10000000), WINDOW_EVENT_RATE (for q5 q7 q8, 1000000, so windows fire during the run),
# SEED (0), JAVA_OPTS ("-Xms1g -Xmx1g"), ANCHOR_BASE (/tmp/flink-anchor). Job logs: $ANCHOR_BASE/nexmark/logs/.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
EVENTS="${EVENTS:-10000000}"
QUERIES="${QUERIES:-q0 q1 q2 q3 q5 q7 q8}"
EVENT_RATE="${EVENT_RATE:-10000000}"
WINDOW_EVENT_RATE="${WINDOW_EVENT_RATE:-1000000}"
SEED="${SEED:-0}"
mkdir -p "$WORK/logs"
for q in $QUERIES; do
  case "$q" in q5|q7|q8) rate="$WINDOW_EVENT_RATE" ;; *) rate="$EVENT_RATE" ;; esac
  log="$WORK/logs/$q.log"
  if ! nexmark_java "$q" "$EVENTS" "$rate" "$SEED" discard 2>"$log"; then
    echo "flink-nexmark: $q failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
done
