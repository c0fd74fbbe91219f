#!/usr/bin/python3
"""check_man.py - the man pages match the code.

  1. every key of the configuration key table (proxy/config.c) has an
     entry in starttls-proxy.ini(5), and the page names no key the table
     does not have;
  2. both pages, as CMake configured them, render without a warning
     (MANWIDTH=80 man --warnings -l).

Usage: check_man.py SOURCE_DIR BUILD_DIR.  Exit status 1 on a problem.
"""
import os
import re
import subprocess
import sys

LEGS = ("client", "backend")


def table_keys(config_c):
    with open(config_c, encoding="utf-8") as f:
        text = f.read()
    keys = set(re.findall(r'(?:PROXY|SERVICE|PROFILE)_KEY\(\w+,\s*"(\w+)"',
                          text))
    # TLS_KEYS(...) expands to one key per knob and leg
    for knob in re.findall(r'leg\s+"(_tls_\w+)"', text):
        for leg in LEGS:
            keys.add(leg + knob)
    return keys


def page_keys(page):
    with open(page, encoding="utf-8") as f:
        lines = f.read().splitlines()
    keys = set()
    for i, line in enumerate(lines):
        if line == ".TP" and i + 1 < len(lines):
            keys.update(re.findall(r"\\fB(\w+)\\fR", lines[i + 1]))
    return keys


def main():
    src, build = sys.argv[1], sys.argv[2]
    errors = []
    want = table_keys(os.path.join(src, "proxy", "config.c"))
    page5 = os.path.join(build, "starttls-proxy.ini.5")
    have = page_keys(page5)
    for k in sorted(want - have):
        errors.append("starttls-proxy.ini(5) lacks the key %s" % k)
    for k in sorted(have - want):
        errors.append("starttls-proxy.ini(5) has %s, which is no key" % k)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for page in (page5, os.path.join(build, "starttls-proxy.8")):
        r = subprocess.run(["man", "--warnings", "-l", page], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0 or r.stderr.strip():
            errors.append("%s: man says (status %d): %s" % (
                os.path.basename(page), r.returncode,
                r.stderr.decode(errors="replace").strip()[:500]))
        elif len(r.stdout) < 1000:
            errors.append("%s renders to almost nothing" % page)
    for e in errors:
        print("check_man: " + e)
    if not errors:
        print("check_man: %d keys documented, both pages render cleanly"
              % len(want))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
