#!/usr/bin/env bash
# man_lint: groff -man -ww has nothing to say about any man page. Usage: lint.sh MAN_DIR
set -euo pipefail
command -v groff > /dev/null || { echo "groff not found: install groff-base (scripts/deps.sh)"; exit 77; }
rc=0 n=0
for p in "$1"/*.[1-8]; do
	n=$((n + 1))
	out=$(groff -man -ww -z "$p" 2>&1)
	if [ -n "$out" ]; then
		echo "$p:" && echo "$out"
		rc=1
	fi
done
[ "$n" -ge 4 ] || { echo "only $n man pages in $1"; exit 1; }
[ "$rc" -ne 0 ] || echo "groff -man -ww: nothing to say about $n pages"
exit "$rc"
