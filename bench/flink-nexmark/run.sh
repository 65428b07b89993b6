#!/usr/bin/env bash
# Nexmark on Flink 2.2 (in-process MiniCluster, parallelism 1, checkpoints every 1 s, hashmap state):
# runs each query in turn over EVENTS generated events into a discarding sink and prints
#   METRIC<TAB>flink nexmark <query><TAB><events per second>
# Env: EVENTS (10000000), QUERIES ("q0 q1 q2 q3 q4 q5 q7 q8"), EVENT_RATE (events per second of event
# time, 100000 as in weir's pipeline bench, so 10 M events span 100 s and the 10 s windows fire
# during the run), SEED (0), API (datastream: the hand-written job, lines as weir's; sql: the
# suite's SQL queries, metrics named `flink-sql nexmark <query>`), JAVA_OPTS ("-Xms1g -Xmx1g"),
# ANCHOR_BASE (/tmp/flink-anchor). Job logs: $ANCHOR_BASE/nexmark/logs/.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
EVENTS="${EVENTS:-10000000}"
QUERIES="${QUERIES:-q0 q1 q2 q3 q4 q5 q7 q8}"
EVENT_RATE="${EVENT_RATE:-100000}"
SEED="${SEED:-0}"
API="${API:-datastream}"
mkdir -p "$WORK/logs"
for q in $QUERIES; do
  log="$WORK/logs/$API-$q.log"
  opts="$JAVA_OPTS"
  # The suite's q4 and q7 are regular joins: their state holds every bid (in RocksDB there, on
  # the heap here), past 1 GiB at 10 M events.
  if [ "$API" = sql ]; then opts="$opts -Xms8g -Xmx8g"; fi
  if ! JAVA_OPTS="$opts -Dnexmark.api=$API" nexmark_java "$q" "$EVENTS" "$EVENT_RATE" "$SEED" discard 2>"$log"; then
    echo "flink-nexmark: $q failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
done
