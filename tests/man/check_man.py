#!/usr/bin/env python3
"""The man pages say what the programs do (test man_options):
- every option of `p11muxd --help` is in p11muxd(8)'s OPTIONS, and every option there in --help;
- every command of `p11muxctl --help` is in p11muxctl(8)'s COMMANDS and the reverse, and so
  for its options;
- every configuration key of daemon/config.c (its known-key tables) is an entry of
  p11mux.conf(5), and every entry there is such a key;
- every module parameter (params_get) and environment variable (getenv) of module/ is in
  p11mux-pkcs11(8).
Usage: check_man.py SOURCE_DIR BUILD_DIR. Prints each difference; exits 1 when there is one."""
import glob
import os
import re
import subprocess
import sys

SRC, BUILD = sys.argv[1], sys.argv[2]
problems = []


def page(name):
    with open(os.path.join(SRC, "man", name), encoding="utf-8") as f:
        return f.read()


def section(text, title):
    """The roff source of section `.SH TITLE`, up to the next .SH."""
    m = re.search(r"^\.SH " + re.escape(title) + r"\n(.*?)(?=^\.SH |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def entries(text):
    """The tags of the .TP entries: the line after each .TP, roff escapes undone."""
    tags = re.findall(r"^\.TP\n(.*)$", text, re.M)
    return [t.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")
            .replace("\\fP", "") for t in tags]


def help_text(prog):
    out = subprocess.run([os.path.join(BUILD, prog), "--help"], capture_output=True, text=True,
                         check=True)
    return out.stdout


def options(text):
    """Options written as -x or --long-name."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", text))


def compare(what, in_help, in_man, page_name):
    for o in sorted(in_help - in_man):
        problems.append(f"{what} {o}: in --help, not in {page_name}")
    for o in sorted(in_man - in_help):
        problems.append(f"{what} {o}: in {page_name}, not in --help")


# p11muxd: the option lines of --help (indented, starting with -) against OPTIONS' entries.
h = help_text("p11muxd")
help_opts = set()
for line in h.splitlines():
    m = re.match(r"^\s+(-[^ ].*?)(?:\s{2,}|$)", line)
    if m:
        help_opts |= options(m.group(1))
man_opts = set()
for tag in entries(section(page("p11muxd.8"), "OPTIONS")):
    man_opts |= options(tag)
compare("p11muxd option", help_opts, man_opts, "p11muxd(8)")

# p11muxctl: commands (the first word of each line under "Commands:") and options.
h = help_text("p11muxctl")
cmds, opts, part = set(), set(), None
for line in h.splitlines():
    if not line.startswith(" "):
        part = line.rstrip(":")
        continue
    words = line.split()
    if part == "Commands" and re.match(r"^  [a-z]", line):
        cmds.add(words[0])
    elif part == "Options":
        m = re.match(r"^\s+(-[^ ].*?)(?:\s{2,}|$)", line)
        if m:
            opts |= options(m.group(1))
ctl = page("p11muxctl.8")
# A tag is ".B status [--json] ..." or ".BI drain " member"": the command is its second word.
man_cmds = {t.split()[1] for t in entries(section(ctl, "COMMANDS"))}
compare("p11muxctl command", cmds, man_cmds, "p11muxctl(8)")
man_ctl_opts = set()
for tag in entries(section(ctl, "OPTIONS")):
    man_ctl_opts |= options(tag)
compare("p11muxctl option", opts, man_ctl_opts, "p11muxctl(8)")

# p11mux.conf(5): the keys of config.c's known-key tables against the page's entries.
with open(os.path.join(SRC, "daemon", "config.c"), encoding="utf-8") as f:
    config_c = f.read()
keys = set()
for table in re.findall(r"known\[\]\s*=\s*\{(.*?)\};", config_c, re.S):
    keys |= set(re.findall(r'"([a-z_]+)"', table))
if len(keys) < 30:
    problems.append(f"only {len(keys)} keys found in daemon/config.c: has its layout changed?")
conf = page("p11mux.conf.5")
man_keys = {t.split()[1] for t in entries(conf) if t.startswith(".B ")}
for k in sorted(keys - man_keys):
    problems.append(f"configuration key {k}: in daemon/config.c, not in p11mux.conf(5)")
for k in sorted(man_keys - keys):
    problems.append(f"configuration key {k}: in p11mux.conf(5), not in daemon/config.c")
with open(os.path.join(SRC, "config", "p11mux.conf.example"), encoding="utf-8") as f:
    for k in sorted(set(re.findall(r"^#?\s*([a-z_]+) = ", f.read(), re.M)) - man_keys):
        problems.append(f"configuration key {k}: in p11mux.conf.example, not in p11mux.conf(5)")

# p11mux-pkcs11(8): the shim's parameters and environment variables.
shim = page("p11mux-pkcs11.8").replace("\\-", "-")
names = set()
for path in glob.glob(os.path.join(SRC, "module", "*.c")):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    names |= {f"{p}=" for p in re.findall(r'params_get\(\s*\w+,\s*"([a-z_]+)"\)', text)}
    names |= set(re.findall(r'getenv\("([A-Z0-9_]+)"\)', text))
if not names:
    problems.append("no parameter or variable found in module/*.c: has its layout changed?")
for n in sorted(names):
    if n not in shim:
        problems.append(f"module {'parameter' if n.endswith('=') else 'variable'} {n}: "
                        "not in p11mux-pkcs11(8)")

for p in problems:
    print(p)
if problems:
    sys.exit(1)
print(f"man pages agree: {len(help_opts)} p11muxd options, {len(cmds)} p11muxctl commands, "
      f"{len(keys)} configuration keys, {len(names)} module parameters and variables")
