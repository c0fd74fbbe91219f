#!/usr/bin/python3
"""check_structure.py - the house rules that the compiler does not check.

Modules are named by file: include/x.h and proxy/x.c are module x, and
session_int.h, session_cmd.c and session_relay.c are parts of module
session.  The rules (README "Architecture"):

  1. no circle of #include "..." edges among modules;
  2. proxy/backend.c does not include session_int.h (the backend leg knows
     nothing of the session);
  3. no .c file declares by hand a function that is not its own static
     one (prototypes of shared functions live in headers).

Exit status 1 with one line per broken rule, 0 otherwise.
Usage: check_structure.py [REPO]   (default: the repository of this file)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)\.h"', re.M)
# a function declaration at file scope: "type name(args);" not static
PROTO = re.compile(r'^(?!static\b)(?!typedef\b)[A-Za-z_][A-Za-z0-9_ \*]*?'
                   r'\b([a-z_][a-z0-9_]*)\s*\([^;{}]*\)\s*;', re.M)
PARTS = {"session_int": "session", "session_cmd": "session",
         "session_relay": "session"}


def module(name):
    return PARTS.get(name, name)


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    files = []
    for d, ext in (("proxy", ".c"), ("include", ".h")):
        for f in sorted(os.listdir(os.path.join(repo, d))):
            if f.endswith(ext):
                files.append(os.path.join(repo, d, f))
    edges = {}
    errors = []
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        me = module(name)
        for inc in INCLUDE.findall(text):
            if module(inc) != me:
                edges.setdefault(me, set()).add(module(inc))
            if name == "backend" and path.endswith(".c") and \
                    inc == "session_int":
                errors.append("proxy/backend.c includes session_int.h")
        if path.endswith(".c"):
            for m in PROTO.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                errors.append("%s:%d: %s declared by hand (put it in a "
                              "header)" % (os.path.relpath(path, repo), line,
                                           m.group(1)))
    # circles: depth-first search for a back edge
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                errors.append("circle: " + " -> ".join(
                    stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    for e in errors:
        print("check_structure: " + e)
    if not errors:
        print("check_structure: %d modules, %d edges, no circle" % (
            len(set(edges) | {n for v in edges.values() for n in v}),
            sum(len(v) for v in edges.values())))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
