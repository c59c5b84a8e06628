#!/usr/bin/env python3
"""Lists C functions longer than a limit (default 100 lines, from the opening to the closing
brace). The house style (clang-format) puts a function's braces in column 0, which is what
this looks for. Usage: function_length.py [--max N] DIR_OR_FILE...  Exits 1 when one is too
long."""
import os
import re
import sys


def functions(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    name, start = None, None
    for i, line in enumerate(lines):
        if line == "{" and i > 0:
            # The name is on the line that opens the parameter list, above the brace.
            for j in range(i - 1, max(i - 8, -1), -1):
                m = re.match(r"^\**([A-Za-z_][A-Za-z0-9_]*)\(", lines[j])
                if m:
                    name = m.group(1)
                    break
            else:
                name = None
            start = i
        elif line == "}" and start is not None:
            if name is not None:
                yield name, start + 1, i - start + 1
            name, start = None, None


def main(argv):
    limit = 100
    if len(argv) > 2 and argv[1] == "--max":
        limit = int(argv[2])
        argv = argv[2:]
    paths = []
    for a in argv[1:]:
        if os.path.isdir(a):
            for root, _, files in os.walk(a):
                paths += [os.path.join(root, f) for f in files if f.endswith(".c")]
        else:
            paths.append(a)
    bad = 0
    for p in sorted(paths):
        for name, line, n in functions(p):
            if n > limit:
                print(f"{p}:{line}: {name} is {n} lines (limit {limit})")
                bad += 1
    if bad == 0:
        print(f"no function longer than {limit} lines in {len(paths)} files")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
