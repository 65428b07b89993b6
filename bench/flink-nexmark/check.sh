#!/usr/bin/env bash
# Cross-check: runs each query over the same events as weir (200000 events,
# 10000 events/s of event time, seed 7) into $ANCHOR_BASE/nexmark/check/<q>.txt
# and compares it with EXPECTED_DIR/<q>.txt (weir's lines, one result per line).
# Usage: check.sh EXPECTED_DIR   (or EXPECTED_DIR=... check.sh); QUERIES selects queries.
# Windowed queries (q5 q7 q8): the Flink job drops windows that weir's last watermark
# (max event time - 4 s - 1 ms) has not passed, and q4 the auctions that expire after it,
# see NexmarkFlink.java.
# A file matches if it is identical, or "same lines, other order" if only the order differs
# (order within a window is not part of the queries' semantics; Flink's q8 emits a window's keys
# in timer order, weir in id order). Exit status 1 if any query differs or is missing.
set -euo pipefail
EXPECTED_DIR="${1:-${EXPECTED_DIR:-}}"
if [ -z "$EXPECTED_DIR" ] || [ ! -d "$EXPECTED_DIR" ]; then
  echo "usage: check.sh EXPECTED_DIR (a directory of <query>.txt from weir)" >&2
  exit 2
fi
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
# The events `cargo bench -p weir --bench pipeline -- --nexmark-expected DIR` writes weir's lines for.
N=200000
RATE=10000
SEED=7
QUERIES="${QUERIES:-q0 q1 q2 q3 q4 q5 q7 q8}"
OUT="$WORK/check"
mkdir -p "$OUT"
bad=0
for q in $QUERIES; do
  got="$OUT/$q.txt" want="$EXPECTED_DIR/$q.txt"
  if ! nexmark_java "$q" "$N" "$RATE" "$SEED" "$got" >/dev/null 2>"$OUT/$q.log"; then
    echo "$q: FAIL (Flink job failed, see $OUT/$q.log)"; bad=1; continue
  fi
  if [ ! -f "$want" ]; then
    echo "$q: MISSING $want ($(wc -l <"$got") Flink lines in $got)"; bad=1
  elif cmp -s "$got" "$want"; then
    echo "$q: OK ($(wc -l <"$got") lines, identical)"
  elif cmp -s <(LC_ALL=C sort "$got") <(LC_ALL=C sort "$want"); then
    echo "$q: OK ($(wc -l <"$got") lines, same lines, other order)"
  else
    echo "$q: DIFF (Flink $(wc -l <"$got") lines, weir $(wc -l <"$want")); first differences (< Flink, > weir):"
    diff <(LC_ALL=C sort "$got") <(LC_ALL=C sort "$want") | grep '^[<>]' | head -n 10 | cut -c1-200 || true
    bad=1
  fi
done
exit $bad
