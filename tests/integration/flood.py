#!/usr/bin/env python3
"""A local attacker on p11muxd's sockets, for it_exhaustion.sh. Each mode writes what it saw
to OUT as "key value" lines (and OUT.ready once its first connection is set up):

  flood.py SOCK idle N OUT STOPFILE
      N connections, each with a HELLO: counts those answered (accepted) and those closed at
      once (refused), then holds the accepted ones idle until STOPFILE exists, and counts how
      many are still open then.
  flood.py SOCK slow K SECONDS OUT
      K connections at a time that send a frame one byte every 2 s, for SECONDS: half of
      them from the first byte on (the HELLO itself), half after a HELLO. Reports when the
      daemon closed each (seconds since its first byte), and connections refused at once.
  flood.py SOCK noread K SECONDS OUT
      K connections at a time that shake hands, then send GET_SLOTS requests and never read
      a reply, for SECONDS. Reports how many requests went out, and how long after the
      daemon stopped taking them it closed the connection.
  flood.py CONTROL trickle K SECONDS OUT
      K connections at a time to the control socket that send "status\\n" one byte every
      2 s. Reports how long the daemon waited for the line before it closed the connection,
      connections closed at once with no answer (refused), and answers.
"""
import errno
import os
import select
import socket
import struct
import sys
import threading
import time

MAGIC = 0x50313158
HELLO = struct.pack(">IIQQQ", 28, 1, MAGIC, 3, 3)  # length, call HELLO, magic, versions (3)
GET_SLOTS = struct.pack(">II", 4, 2)
GONE = (BrokenPipeError, ConnectionResetError, ConnectionRefusedError)
# A connection the daemon closes sooner than this was refused, not timed out: the shortest
# time-out (1 s, the control socket's) runs from the accept, after the client started (longer under
# ThreadSanitizer, whose daemon accepts slowly).
REFUSED_S = float(os.environ.get("FLOOD_REFUSED_S", "0.9"))


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def closed_within(s, seconds):
    """Whether the daemon closed s (end of stream or reset) within seconds."""
    r, _, _ = select.select([s], [], [], seconds)
    if not r:
        return False
    try:
        return s.recv(65536) == b""
    except GONE:
        return True


def connect_or_report(path, rep):
    """A connection, or None when the daemon refused it (reported; a pause before the next)."""
    try:
        return connect(path)
    except OSError:
        rep.add("connect_error 1")
        time.sleep(0.2)
        return None


def handshake(s, timeout=10):
    """True when the HELLO got an answer; False when the connection was closed instead."""
    try:
        s.sendall(HELLO)
        s.settimeout(timeout)
        hdr = s.recv(4)
        s.settimeout(None)
        return len(hdr) == 4
    except (OSError, socket.timeout):
        return False


class Report:
    def __init__(self, path):
        self.path, self.lines, self.lock = path, [], threading.Lock()
        self.ready = False

    def add(self, line):
        with self.lock:
            self.lines.append(line)

    def mark_ready(self):
        with self.lock:
            if not self.ready:
                self.ready = True
                open(self.path + ".ready", "w").close()

    def write(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")


def idle(path, n, out, stopfile):
    rep = Report(out)
    conns = []
    for _ in range(n):
        try:
            conns.append(connect(path))
        except OSError as e:
            rep.add("connect_error %s" % errno.errorcode.get(e.errno, e.errno))
    for s in conns:
        try:
            s.sendall(HELLO)
        except OSError:
            pass
    accepted, refused = [], 0
    for s in conns:
        s.settimeout(20)
        try:
            ok = len(s.recv(64)) > 0
        except (OSError, socket.timeout):
            ok = False
        if ok:
            s.settimeout(None)
            accepted.append(s)
        else:
            refused += 1
            s.close()
    rep.add("accepted %d" % len(accepted))
    rep.add("refused %d" % refused)
    rep.write()
    rep.mark_ready()
    deadline = time.time() + 120
    while not os.path.exists(stopfile) and time.time() < deadline:
        time.sleep(0.2)
    still = sum(1 for s in accepted if not closed_within(s, 0))
    rep.add("still_open %d" % still)
    rep.write()


def trickle_one(path, rep, after_hello, until):
    s = connect_or_report(path, rep)
    if s is None:
        return
    if after_hello and not handshake(s):
        rep.add("refused 1")
        s.close()
        time.sleep(0.2)
        return
    rep.mark_ready()
    frame = GET_SLOTS if after_hello else HELLO
    start = time.time()
    for i in range(len(frame)):
        try:
            s.send(frame[i:i + 1])
        except OSError:
            break
        if closed_within(s, 2.0) or time.time() > until + 30:
            break
    took = time.time() - start
    if not after_hello and took < REFUSED_S:
        rep.add("refused 1")
        time.sleep(0.2)
    else:
        rep.add("%s %.2f" % ("frame_closed_after" if after_hello else "hello_closed_after", took))
    s.close()


def noread_one(path, rep):
    s = connect_or_report(path, rep)
    if s is None:
        return
    if not handshake(s):
        rep.add("refused 1")
        s.close()
        time.sleep(0.2)
        return
    rep.mark_ready()
    s.setblocking(False)
    sent, last_taken, start, pending = 0, time.time(), time.time(), b""
    while True:
        if not pending:
            pending = GET_SLOTS
        try:
            n = s.send(pending)
            pending = pending[n:]
            last_taken = time.time()
            if not pending:
                sent += 1
            continue
        except BlockingIOError:
            pass
        except GONE:
            break
        # The daemon takes no more: wait for it to close (or, failing that, give up).
        _, w, x = select.select([], [s], [s], 1.0)
        if time.time() - last_taken > 60:
            rep.add("never_closed 1")
            s.close()
            return
    rep.add("noread_closed requests %d total %.2f stalled %.2f" %
            (sent, time.time() - start, time.time() - last_taken))
    s.close()


def control_one(path, rep):
    s = connect_or_report(path, rep)
    if s is None:
        return
    rep.mark_ready()
    start, answer = time.time(), b""
    for c in b"status\n":
        try:
            s.send(bytes([c]))
        except OSError:
            break
        r, _, _ = select.select([s], [], [], 2.0)
        if r:
            break
    try:
        s.settimeout(5)
        while True:
            got = s.recv(65536)
            if not got:
                break
            answer += got
    except (OSError, socket.timeout):
        pass
    took = time.time() - start
    first = answer.split(b"\n", 1)[0].decode(errors="replace")
    if not answer and took < REFUSED_S:
        rep.add("control_refused %.2f" % took)
        time.sleep(0.1)
    elif answer:
        rep.add("control_answered %.2f %s" % (took, first.replace(" ", "_")))
    else:
        rep.add("control_closed_after %.2f" % took)
    s.close()


def run_threads(k, seconds, out, one):
    """k threads, each calling one(rep, i, until) in a loop for seconds; then the report."""
    rep = Report(out)
    until = time.time() + seconds

    def loop(i):
        while time.time() < until:
            one(rep, i, until)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rep.write()


def main(argv):
    path, mode = argv[1], argv[2]
    if mode == "idle":
        idle(path, int(argv[3]), argv[4], argv[5])
    elif mode in ("slow", "noread", "trickle"):
        one = {
            # Half the connections stall before HELLO, half after it.
            "slow": lambda rep, i, until: trickle_one(path, rep, i % 2 == 1, until),
            "noread": lambda rep, i, until: noread_one(path, rep),
            "trickle": lambda rep, i, until: control_one(path, rep),
        }[mode]
        run_threads(int(argv[3]), float(argv[4]), argv[5], one)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main(sys.argv)
