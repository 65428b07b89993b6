#!/usr/bin/env bash
# Measures three ways to find the pages of a linear memory written since
# the last checkpoint (see dirty.c) and prints a Markdown table: 1 MiB,
# 64 MiB and 256 MiB, 1 % of the pages written between two looks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
cc -O2 -Wall -o "$bin" "$here/dirty.c"
echo "| memory | page hashing | soft-dirty bits (found) | userfaultfd write-protect + PAGEMAP_SCAN | 1 % of pages written, protected / not |"
echo "| --- | --- | --- | --- | --- |"
for mib in 1 64 256; do
  "$bin" "$mib" 1 5 | awk -v mib="$mib" '
    /^hash:/      { hash = $2 " ms" }
    /^softdirty:/ { soft = $2 " ms (" $6 " of the pages)" }
    /^uffd-wp:/   { wp = $2 " ms"; split($0, a, "writes took "); split(a[2], b, " "); written = b[1] " / " b[4] " ms" }
    END { printf "| %s MiB | %s | %s | %s | %s |\n", mib, hash, soft, wp, written }'
done
