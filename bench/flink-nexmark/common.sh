# Sourced by run.sh and check.sh: finds or installs Flink 2.2 (the project's Flink anchor setup),
# compiles NexmarkFlink.java into $ANCHOR_BASE/nexmark/nexmark-flink.jar when the source is newer,
# and defines nexmark_java <args...> (one JVM, in-process MiniCluster).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="${ANCHOR_BASE:-/tmp/flink-anchor}"
# The project's Flink anchor, beside the checkout (scripts/bench passes the one WEIR_BENCH_FLINK names).
ANCHOR_SETUP="${ANCHOR_SETUP:-$HERE/../../../shared/anchors/flink/setup.sh}"
JAVA_OPTS="${JAVA_OPTS:--Xms1g -Xmx1g}"

if ! command -v java >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
  echo "flink-nexmark: java, javac and jar (a JDK 17) are required but not on PATH" >&2
  exit 1
fi

flink_home() { ls -d "$BASE"/venv/lib/python3*/site-packages/pyflink 2>/dev/null | head -n 1; }
FLINK_HOME="${FLINK_HOME:-$(flink_home || true)}"
if [ -z "$FLINK_HOME" ] || ! ls "$FLINK_HOME"/lib/flink-dist-*.jar >/dev/null 2>&1; then
  if [ ! -x "$ANCHOR_SETUP" ]; then
    echo "flink-nexmark: no Flink in $BASE and no setup script at $ANCHOR_SETUP: set FLINK_HOME, or ANCHOR_SETUP (scripts/bench: WEIR_BENCH_FLINK) to the Flink anchor's setup.sh" >&2
    exit 1
  fi
  echo "flink-nexmark: installing Flink into $BASE with $ANCHOR_SETUP" >&2
  ANCHOR_BASE="$BASE" "$ANCHOR_SETUP" >&2
  FLINK_HOME="$(flink_home)"
fi

WORK="$BASE/nexmark"
JAR="$WORK/nexmark-flink.jar"
mkdir -p "$WORK"
if [ ! -f "$JAR" ] || [ "$HERE/NexmarkFlink.java" -nt "$JAR" ]; then
  rm -rf "$WORK/classes" && mkdir -p "$WORK/classes"
  javac -nowarn -d "$WORK/classes" -cp "$FLINK_HOME/lib/*" "$HERE/NexmarkFlink.java"
  (cd "$WORK/classes" && jar cf "$JAR.tmp" . && mv "$JAR.tmp" "$JAR")
fi
cat > "$WORK/log4j2.properties" <<'LOG'
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n
LOG

# nexmark_java <query> <events> <event-rate> <seed> <discard|file>: runs the job; METRIC line on stdout.
nexmark_java() {
  rm -rf "$WORK/ckpt"  # checkpoints of the previous run (Flink leaves empty job dirs)
  # shellcheck disable=SC2086
  java $JAVA_OPTS -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dnexmark.checkpoints="$WORK/ckpt" \
    -cp "$JAR:$FLINK_HOME/lib/*" NexmarkFlink "$@"
}
