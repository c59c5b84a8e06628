#!/usr/bin/env python3
"""A structure-aware fuzzing client of p11muxd's client socket (scripts/fuzz-socket.sh).

  fuzz_socket.py SOCK PIN SECONDS PROCS OUT [POISON_HEX CTL]

PROCS processes, each with a few connections, send random requests for SECONDS: mostly
well-formed ones (docs/protocol.md, version 3) with random but plausible values (slots,
handles, mechanisms and parameters, templates, data, PINs right and wrong, tickets), the rest
mutated (bit flips, truncation, bytes added, a wrong length prefix, a wrong call code,
garbage). Each process logs in once with the right PIN and then uses its ticket; wrong PINs
are rare (the pool's counter delays each check after one, up to 60 s).

Session objects: most connections say CLIENT with the process's application id after the
handshake (some another id, or none); CREATE, GENERATE and GENERATE_PAIR carry templates of
data objects, AES keys and RSA or EC key pairs (CKA_TOKEN true now and then, CKA_PRIVATE
either way, attributes repeated or of any type), and the handles they return are used
(operations, GET_OBJECT, DESTROY); DROP names a session, 0 or all ones. Checked (exit 4 when
broken): a request with CKA_TOKEN true never makes an object, a returned handle is a session
object's (0x80000000 set) and never a token object's, DESTROY of a token object never
succeeds, and a handle destroyed with CKR_OK is gone (GET_OBJECT on the same connection:
CKR_OBJECT_HANDLE_INVALID).

With POISON_HEX (the prefix the simulated members' crash-on fault is armed with) and CTL
(p11muxctl), the first process also sends a poison input now and then (a SIGN whose data
starts with the prefix), only while every member is up and at most one every 20 s: each costs
two helpers, and the others must be left to carry the load.

Writes a JSON summary to OUT: requests sent per call and kind, replies per result code,
connections the daemon closed, requests not answered in time, poison inputs and their
answers.
"""
import json
import multiprocessing
import os
import random
import socket
import struct
import subprocess
import sys
import time

MAGIC = 0x50313158
CALLS = {1: "HELLO", 2: "GET_SLOTS", 3: "LOGIN", 4: "LOGOUT", 5: "FIND", 6: "GET_OBJECT",
         7: "SIGN", 8: "VERIFY", 9: "ENCRYPT", 10: "DECRYPT", 11: "DIGEST", 12: "RANDOM",
         13: "CLIENT", 14: "CREATE", 15: "GENERATE", 16: "GENERATE_PAIR", 17: "DESTROY",
         18: "DROP"}
SESSION_OBJECT = 0x80000000
DROP_PRIVATE = 0xffffffffffffffff
RV = {0x0: "CKR_OK", 0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED",
      0x7: "CKR_ARGUMENTS_BAD", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
      0x30: "CKR_DEVICE_ERROR", 0x32: "CKR_DEVICE_REMOVED", 0x40: "CKR_ENCRYPTED_DATA_INVALID",
      0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE", 0x54: "CKR_FUNCTION_NOT_SUPPORTED",
      0x60: "CKR_KEY_HANDLE_INVALID", 0x62: "CKR_KEY_SIZE_RANGE",
      0x63: "CKR_KEY_TYPE_INCONSISTENT", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
      0x70: "CKR_MECHANISM_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID",
      0x82: "CKR_OBJECT_HANDLE_INVALID", 0xa0: "CKR_PIN_INCORRECT", 0xa4: "CKR_PIN_LOCKED",
      0xc0: "CKR_SIGNATURE_INVALID", 0xc1: "CKR_SIGNATURE_LEN_RANGE",
      0xd1: "CKR_TEMPLATE_INCONSISTENT", 0xe0: "CKR_TOKEN_NOT_PRESENT",
      0x101: "CKR_USER_NOT_LOGGED_IN", 0x103: "CKR_USER_TYPE_INVALID", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
      0x110: "CKR_WRAPPED_KEY_INVALID", 0x150: "CKR_BUFFER_TOO_SMALL",
      0x190: "CKR_CRYPTOKI_NOT_INITIALIZED", 0x3: "CKR_SLOT_ID_INVALID",
      0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
      0x1b: "CKR_ACTION_PROHIBITED", 0x2: "CKR_HOST_MEMORY", 0x31: "CKR_DEVICE_MEMORY",
      0xe2: "CKR_TOKEN_WRITE_PROTECTED", 0xd0: "CKR_TEMPLATE_INCOMPLETE",
      0xb3: "CKR_SESSION_HANDLE_INVALID", 0x11: "CKR_ATTRIBUTE_READ_ONLY"}

# Mechanisms: (type, parameter kind), valid ones and some the pool or SoftHSM does not offer.
SIGN_MECHS = [(0x1, 0), (0x3, 0), (0x6, 0), (0x40, 0), (0x41, 0), (0x42, 0), (0x46, 0),
              (0xd, 2), (0x43, 2), (0x44, 2), (0x45, 2), (0x1041, 0), (0x1042, 0),
              (0x1044, 0), (0x1045, 0), (0x1046, 0), (0x1047, 0)]
CRYPT_MECHS = [(0x1, 0), (0x3, 0), (0x9, 3), (0x1082, 1), (0x1085, 1), (0x1081, 0),
               (0x133, 1), (0x1086, 1)]
DIGEST_MECHS = [(0x210, 0), (0x220, 0), (0x250, 0), (0x255, 0), (0x260, 0), (0x270, 0),
                (0x1210, 0), (0x200, 0), (0x240, 0)]
GEN_MECHS = [(0x1080, 0), (0x350, 0), (0x1080, 0), (0x0, 0), (0x1082, 1)]
PAIR_MECHS = [(0x1040, 0), (0x1040, 0), (0x0, 0), (0x1080, 0), (0x1, 0)]
HASHES = [0x220, 0x250, 0x255, 0x260, 0x270, 0x210, 0]
MGFS = [1, 2, 3, 4, 5, 0, 99]
# Attribute types a template may hold, and whether the value is a CK_ULONG (kind 2).
ATTRS = [(0x0, True), (0x100, True), (0x1, False), (0x2, False), (0x3, False),
         (0x102, False), (0x108, False), (0x103, False), (0x104, False), (0x105, False),
         (0x120, False), (0x121, False), (0x180, False), (0x80, True), (0x161, True),
         (0x11, False), (0x162, False), (0x170, False)]


def u32(v):
    return struct.pack(">I", v & 0xffffffff)


def u64(v):
    return struct.pack(">Q", v & 0xffffffffffffffff)


def y(b):
    return u32(len(b)) + b


class Gen:
    """Well-formed requests with random, mostly plausible values."""

    def __init__(self, rnd, pin, state):
        self.r, self.pin, self.st = rnd, pin, state

    def slot(self):
        r = self.r.random()
        if r < 0.9 and self.st["slots"]:
            return self.r.choice(self.st["slots"])
        return self.r.choice([0, 1, 2, 99, 0xffffffff, 1 << 63, self.r.getrandbits(64)])

    def handle(self, cls=None, kt=None):
        pool = self.st["objects"]
        if self.st["made"] and self.r.random() < 0.3:
            pool = self.st["made"]
        objs = [o for o in pool
                if (cls is None or o[1] == cls) and (kt is None or o[2] == kt)]
        if objs and self.r.random() < 0.9:
            return self.r.choice(objs)[0]
        if self.st["objects"] and self.r.random() < 0.5:
            return self.r.choice(self.st["objects"])[0]
        return self.r.choice([0, 1, 0xffffffff, self.r.getrandbits(64)])

    def data(self, big=False):
        r = self.r.random()
        if r < 0.1:
            n = 0
        elif r < 0.7:
            n = self.r.randint(1, 64)
        elif r < 0.95:
            n = self.r.randint(65, 600)
        else:
            n = self.r.randint(600, 70000 if big else 4096)
        if self.r.random() < 0.3:
            return bytes([self.r.choice([0, 0xff])]) * n
        return self.r.randbytes(n)

    def mech(self, table):
        if self.r.random() < 0.05:
            t, kind = self.r.choice([(self.r.getrandbits(32), 0),
                                     (self.r.choice(SIGN_MECHS + CRYPT_MECHS)[0], 1)])
        else:
            t, kind = self.r.choice(table)
        out = u64(t)
        if kind == 1:
            n = self.r.choice([16, 16, 8, 0, 15, 32])
            return out + bytes([1]) + y(self.r.randbytes(n))
        if kind == 2:
            return out + bytes([2]) + u64(self.r.choice(HASHES)) + u64(self.r.choice(MGFS)) + \
                u64(self.r.choice([0, 20, 32, 64, 222, 1 << 40]))
        if kind == 3:
            src = self.r.choice([b"", b"", b"label", self.r.randbytes(40)])
            return out + bytes([3]) + u64(self.r.choice(HASHES)) + u64(self.r.choice(MGFS)) + \
                u64(self.r.choice([1, 1, 0, 2])) + y(src)
        return out + bytes([0])

    def template(self):
        n = self.r.choice([0, 1, 1, 2, 2, 3, 4, 8, 65])
        out = u32(n)
        for _ in range(n):
            t, ul = self.r.choice(ATTRS)
            if self.r.random() < 0.05:
                t = self.r.getrandbits(32)
            out += u64(t) + u64(0)
            if ul:
                out += bytes([2]) + u64(self.r.choice([0, 1, 2, 3, 4, 0x80000000]))
            elif t in (0x1, 0x2, 0x3, 0x103, 0x104, 0x105, 0x108, 0x162, 0x170):
                out += bytes([1]) + y(bytes([self.r.choice([0, 1, 1, 2])]))
            elif self.r.random() < 0.1:
                out += bytes([0])
            else:
                out += bytes([1]) + y(self.r.choice([b"\x01", b"\x02", b"httpdcert", b"eccert",
                                                   self.r.randbytes(self.r.randint(0, 40))]))
        return out

    def attr(self, t, v):
        """One attribute of a template: CK_ULONG values as kind 2, None as no value."""
        if v is None:
            return u64(t) + u64(0) + bytes([0])
        if isinstance(v, int):
            return u64(t) + u64(0) + bytes([2]) + u64(v)
        return u64(t) + u64(0) + bytes([1]) + y(v)

    def make_template(self, kind):
        """(template, whether it says CKA_TOKEN true): kind "data", "aes", "gen", "rsapub",
        "ecpub", "priv"; with CKA_TOKEN and CKA_PRIVATE either way, sometimes an attribute repeated,
        one of any type or of another length."""
        r, T, F = self.r, b"\x01", b"\x00"
        base = {
            "data": [(0x0, 0), (0x3, b"fuzz"), (0x10, b"app"), (0x11, r.randbytes(r.randint(0, 64)))],
            "aes": [(0x0, 4), (0x100, 0x1f), (0x11, r.randbytes(r.choice([16, 32, 24, 7]))),
                    (0x104, T), (0x105, T)],
            "gen": [(0x0, 4), (0x100, 0x1f), (0x161, r.choice([16, 32, 32, 24, 0, 1 << 20])),
                    (0x104, T), (0x105, T), (0x3, b"gen")],
            "rsapub": [(0x121, r.choice([1024, 1024, 2048, 0, 3])), (0x122, b"\x01\x00\x01"),
                       (0x10a, T), (0x104, T)],
            "ecpub": [(0x180, r.choice([b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07",
                                        b"\x06\x05\x2b\x81\x04\x00\x22", b"\x06\x01\x00"])),
                      (0x10a, T)],
            "priv": [(0x108, T), (0x103, T), (0x162, F), (0x102, b"\x42")],
        }[kind]
        attrs = [a for a in base if r.random() < 0.9]
        x = r.random()
        if x < 0.1:
            attrs.append((0x1, T))
        elif x < 0.7:
            attrs.append((0x1, F))
        x = r.random()
        if x < 0.3:
            attrs.append((0x2, F))
        elif x < 0.6:
            attrs.append((0x2, T))
        if attrs and r.random() < 0.05:
            attrs.append(r.choice(attrs))
        if r.random() < 0.05:
            attrs.append((r.choice([r.getrandbits(32), 0x40000211, 0x80000001, 0x202]),
                          r.randbytes(r.randint(0, 16))))
        if r.random() < 0.03:
            attrs.append((r.choice([0x1, 0x2, 0x104, 0x108]), r.choice([b"", b"\x01\x01", None])))
        r.shuffle(attrs)
        # Asks for a token object: any CKA_TOKEN whose value is not all zero bytes.
        token = any(t == 0x1 and isinstance(v, bytes) and any(v) for t, v in attrs)
        return u32(len(attrs)) + b"".join(self.attr(t, v) for t, v in attrs), token

    def session(self):
        r = self.r.random()
        if r < 0.8:
            return self.r.randint(1, 4)
        return self.r.choice([0, DROP_PRIVATE, self.r.getrandbits(64)])

    def made_handle(self):
        if self.st["made"] and self.r.random() < 0.8:
            return self.r.choice(self.st["made"])[0]
        if self.r.random() < 0.5:
            return self.handle()
        return SESSION_OBJECT | self.r.getrandbits(31)

    def login(self):
        r = self.r.random()
        ticket = self.st.get("ticket", b"")
        if r < 0.70:
            pin, tk = b"", ticket
        elif r < 0.80:
            pin, tk = b"", self.r.choice([b"", ticket[:-1] + b"x" if ticket else b"",
                                          self.r.randbytes(36)])
        elif r < 0.95 or not self.st.get("may_guess"):
            pin, tk = self.pin, self.r.choice([b"", ticket])
        else:
            pin, tk = self.r.choice([b"123456", self.pin + b"0", b"", self.r.randbytes(8)]), \
                self.r.choice([b"", ticket])
            self.st["guessed"] = self.st.get("guessed", 0) + 1
        user = 1 if self.r.random() < 0.95 else self.r.choice([0, 2, 3, 0xffffffff])
        return u32(3) + u64(self.slot()) + u64(user) + y(pin) + y(tk)

    def request(self, call):
        r = self.r
        if call == 1:
            lo, hi = r.choice([(3, 3), (1, 3), (3, 4), (2, 2), (4, 9), (0, 0xffffffff)])
            return u32(1) + u64(MAGIC if r.random() < 0.95 else r.getrandbits(64)) + u64(lo) + u64(hi)
        if call == 2:
            return u32(2)
        if call == 3:
            return self.login()
        if call == 4:
            return u32(4) + u64(self.slot())
        if call == 5:
            return u32(5) + u64(self.slot()) + self.template()
        if call == 6:
            return u32(6) + u64(self.slot()) + u64(self.handle())
        if call in (7, 8):
            key = self.handle(cls=r.choice([3, 3, 2]))
            body = u32(call) + u64(self.slot()) + self.mech(SIGN_MECHS) + u64(key) + y(self.data())
            if call == 8:
                body += y(r.randbytes(r.choice([0, 64, 256, 255, 300])))
            return body
        if call in (9, 10):
            key = self.handle(cls=r.choice([2, 3, 3]))
            return u32(call) + u64(self.slot()) + self.mech(CRYPT_MECHS) + u64(key) + \
                y(self.data(call == 9) if r.random() < 0.8 else r.randbytes(256))
        if call == 11:
            return u32(11) + u64(self.slot()) + self.mech(DIGEST_MECHS) + y(self.data(True))
        if call == 12:
            n = r.choice([0, 1, 16, 32, 256, 4096, 65536, 65537, 1 << 20, r.getrandbits(64)])
            return u32(12) + u64(self.slot()) + u64(n)
        return self.request_objects(call)[0]

    def request_objects(self, call):
        """A session-object request, and whether it asks for a token object."""
        r = self.r
        if call == 13:
            return u32(13) + u64(r.choice([self.st["app"]] * 3 + [0, r.getrandbits(64)])), False
        if call == 14:
            t, token = self.make_template(r.choice(["data", "data", "aes"]))
            return u32(14) + u64(self.slot()) + u64(self.session()) + t, token
        if call == 15:
            t, token = self.make_template("gen")
            return u32(15) + u64(self.slot()) + u64(self.session()) + self.mech(GEN_MECHS) + t, token
        if call == 16:
            # The public template as the mechanism wants it (mostly).
            mt = r.choice(PAIR_MECHS)
            pub = {0x0: "rsapub", 0x1040: "ecpub"}.get(mt[0], r.choice(["rsapub", "ecpub"]))
            if r.random() < 0.05:
                pub = "ecpub" if pub == "rsapub" else "rsapub"
            t1, tok1 = self.make_template(pub)
            t2, tok2 = self.make_template("priv")
            return u32(16) + u64(self.slot()) + u64(self.session()) + self.mech([mt]) + \
                t1 + t2, tok1 or tok2
        if call == 17:
            return u32(17) + u64(self.slot()) + u64(self.made_handle()), False
        if call == 18:
            return u32(18) + u64(self.slot()) + u64(self.session()), False
        raise ValueError(call)


MUTATIONS = ["bitflip", "truncate", "append", "length", "callcode", "garbage"]


def mutate(r, payload):
    """A mutated frame (with its length prefix) and the kind of mutation."""
    kind = r.choice(MUTATIONS)
    p = bytearray(payload)
    if kind == "bitflip":
        for _ in range(r.randint(1, 8)):
            if p:
                i = r.randrange(len(p))
                p[i] ^= 1 << r.randrange(8)
    elif kind == "truncate":
        p = p[:r.randrange(len(p))] if p else p
    elif kind == "append":
        p += r.randbytes(r.randint(1, 32))
    elif kind == "callcode":
        p[0:4] = u32(r.choice([0, 13, 14, 255, 0x7fffffff, 0xffffffff, r.getrandbits(32)]))
    elif kind == "garbage":
        p = bytearray(r.randbytes(r.randint(0, 200)))
    if kind == "length":
        n = r.choice([0, 1, 3, len(p) - 1, len(p) + 1, len(p) + 100, (1 << 20) + 1,
                      0xffffffff])
        return u32(max(n, 0)) + bytes(p), kind
    return u32(len(p)) + bytes(p), kind


class Closed(Exception):
    pass


class Conn:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)

    def send(self, frame):
        try:
            self.s.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            raise Closed()

    def recv_exact(self, n):
        data = b""
        while len(data) < n:
            try:
                got = self.s.recv(n - len(data))
            except ConnectionResetError:
                raise Closed()
            if not got:
                raise Closed()
            data += got
        return data

    def reply(self, timeout):
        """(call, rv, fields) of the next reply; Closed when the daemon closed the connection;
        socket.timeout when none came in time."""
        self.s.settimeout(timeout)
        n = struct.unpack(">I", self.recv_exact(4))[0]
        body = self.recv_exact(n)
        call, rv = struct.unpack(">IQ", body[:12])
        return call, rv, body[12:]

    def close(self):
        self.s.close()


def parse_slots(b):
    n = struct.unpack(">I", b[:4])[0]
    off, slots = 4, []
    for _ in range(n):
        slots.append(struct.unpack(">Q", b[off:off + 8])[0])
        off += 8 + 108 + 204
        m = struct.unpack(">I", b[off:off + 4])[0]
        off += 4 + 32 * m
    return slots


def parse_attrs(b):
    n = struct.unpack(">I", b[:4])[0]
    off, out = 4, {}
    for _ in range(n):
        t, _st, kind = struct.unpack(">QQB", b[off:off + 17])
        off += 17
        if kind == 1:
            ln = struct.unpack(">I", b[off:off + 4])[0]
            out[t] = b[off + 4:off + 4 + ln]
            off += 4 + ln
        elif kind == 2:
            out[t] = struct.unpack(">Q", b[off:off + 8])[0]
            off += 8
    return out


class Stats:
    def __init__(self):
        self.sent, self.replies, self.mutations = {}, {}, {}
        self.closed, self.timeouts, self.late, self.abandoned = {}, {}, [], {}
        self.broken = []  # session-object invariants that did not hold
        self.replies_by_call = {}
        self.poison = {"sent": 0, "answers": {}}

    @staticmethod
    def inc(d, k, n=1):
        d[k] = d.get(k, 0) + n


class Client:
    """One fuzzing process: a handful of connections, requests until the deadline."""

    def __init__(self, path, pin, seed, st):
        self.path, self.pin = path, pin
        self.r = random.Random(seed)
        self.st = st
        self.gen = Gen(self.r, pin, st)
        self.stats = Stats()

    def handshake(self, c):
        c.send(u32(28) + u32(1) + u64(MAGIC) + u64(3) + u64(3))
        call, rv, _ = c.reply(30)
        if (call, rv) != (1, 0):
            raise Closed()

    def open(self, login=True):
        c = Conn(self.path, 30)
        self.handshake(c)
        # As the shim does: CLIENT with the process's application id (sometimes another,
        # sometimes none: CREATE then fails).
        if self.r.random() < 0.9:
            cid = self.st["app"] if self.r.random() < 0.9 else self.r.getrandbits(64)
            c.send(self.frame(u32(13) + u64(cid)))
            c.reply(30)
        if login and self.st.get("ticket"):
            for slot in self.st["slots"]:
                c.send(self.frame(u32(3) + u64(slot) + u64(1) + y(b"") + y(self.st["ticket"])))
                c.reply(30)
        return c

    @staticmethod
    def frame(payload):
        return u32(len(payload)) + payload

    def setup(self):
        """Logs in with the right PIN (once), learns the slots and the objects."""
        c = Conn(self.path, 120)
        self.handshake(c)
        c.send(self.frame(u32(2)))
        _, rv, b = c.reply(30)
        self.st["slots"] = parse_slots(b) if rv == 0 else []
        for slot in self.st["slots"]:
            c.send(self.frame(u32(3) + u64(slot) + u64(1) + y(self.pin) + y(b"")))
            _, rv, b = c.reply(120)
            if rv == 0:
                self.st["ticket"] = b[4:4 + struct.unpack(">I", b[:4])[0]]
            c.send(self.frame(u32(5) + u64(slot) + u32(0)))
            _, rv, b = c.reply(30)
            n = struct.unpack(">I", b[:4])[0] if rv == 0 else 0
            for i in range(n):
                h = struct.unpack(">Q", b[4 + 8 * i:12 + 8 * i])[0]
                c.send(self.frame(u32(6) + u64(slot) + u64(h)))
                _, rv2, a = c.reply(30)
                if rv2 == 0:
                    at = parse_attrs(a)
                    self.st["objects"].append((h, at.get(0), at.get(0x100)))
        c.close()

    def pick_call(self):
        return self.r.choices(list(range(1, 19)),
                              weights=[2, 4, 6, 1, 8, 8, 20, 8, 8, 10, 10, 6,
                                       2, 5, 3, 2, 4, 3])[0]

    def made(self, call, body):
        """The handles and classes a CREATE, GENERATE or GENERATE_PAIR reply holds."""
        out, off = [], 0
        for _ in range(2 if call == 16 else 1):
            h = struct.unpack(">Q", body[off:off + 8])[0]
            off += 8
            n = struct.unpack(">I", body[off:off + 4])[0]
            at = parse_attrs(body[off:])
            o = off + 4
            for _ in range(n):
                kind = body[o + 16]
                o += 17
                o += 4 + struct.unpack(">I", body[o:o + 4])[0] if kind == 1 else 8 if kind == 2 else 0
            off = o
            out.append((h, at.get(0), at.get(0x100), at.get(0x1)))
        return out

    def check_objects(self, conn, call, payload, token, rv, body):
        """The session-object invariants of one reply (see the module's docstring)."""
        s = self.stats
        name = CALLS[call]
        if call in (14, 15, 16) and rv == 0:
            if token:
                s.broken.append("%s with CKA_TOKEN true answered CKR_OK" % name)
            tokens = {o[0] for o in self.st["objects"]}
            for h, cls, kt, tok in self.made(call, body):
                if not h & SESSION_OBJECT or h in tokens:
                    s.broken.append("%s returned handle 0x%x, not a session object's" % (name, h))
                if tok == b"\x01":
                    s.broken.append("%s made 0x%x with CKA_TOKEN true" % (name, h))
                self.st["made"].append((h, cls, kt))
            del self.st["made"][:-64]
        if call == 17 and rv == 0:
            slot, h = struct.unpack(">QQ", payload[4:20])
            if not h & SESSION_OBJECT:
                s.broken.append("DESTROY of token object 0x%x answered CKR_OK" % h)
            conn.send(self.frame(u32(6) + u64(slot) + u64(h)))
            got, rv2, _ = conn.reply(30)
            if (got, rv2) != (6, 0x82):
                s.broken.append("GET_OBJECT of destroyed 0x%x: call %d, %s" %
                                (h, got, RV.get(rv2, "0x%x" % rv2)))
            self.st["made"] = [o for o in self.st["made"] if o[0] != h]

    def one(self, conns, i):
        """Sends one request on connection i, reads its reply; reopens a closed connection."""
        r, s = self.r, self.stats
        call = self.pick_call()
        token = False
        if call >= 13:
            payload, token = self.gen.request_objects(call)
        else:
            payload = self.gen.request(call)
        mutated = r.random() < 0.2
        name = CALLS[call]
        if mutated:
            frame, kind = mutate(r, payload)
            Stats.inc(s.mutations, kind)
        else:
            frame = self.frame(payload)
        Stats.inc(s.sent, "%s %s" % (name, "mutated" if mutated else "valid"))
        login_pin = call == 3 and not mutated and len(payload) > 28 and \
            struct.unpack(">I", payload[20:24])[0] > 0
        t0 = time.time()
        try:
            conns[i].send(frame)
            if mutated and r.random() < 0.5:
                # Not waiting for an answer: the frame may be short of its length prefix.
                Stats.inc(s.abandoned, name)
                conns[i].close()
                conns[i] = self.open(login=r.random() < 0.9)
                return
            got, rv, body = conns[i].reply(90 if login_pin or mutated else 30)
            Stats.inc(s.replies, RV.get(rv, "0x%x" % rv))
            Stats.inc(s.replies_by_call, "%s %s" % (name, RV.get(rv, "0x%x" % rv)))
            if got != call and not mutated:
                s.late.append("%s answered as call %d" % (name, got))
            elif not mutated:
                self.check_objects(conns[i], call, payload, token, rv, body)
        except Closed:
            Stats.inc(s.closed, "%s %s" % (name, "mutated" if mutated else "valid"))
            conns[i].close()
            conns[i] = self.open(login=r.random() < 0.9)
        except socket.timeout:
            if not mutated:
                Stats.inc(s.timeouts, name)
                s.late.append("%s (valid) not answered in %.0f s" % (name, time.time() - t0))
            conns[i].close()
            conns[i] = self.open()

    def poison(self, ctl, prefix):
        """A SIGN that crashes any member it reaches; only when every member is up."""
        try:
            out = subprocess.run([ctl, "status", "--json"], capture_output=True, timeout=10)
            members = json.loads(out.stdout)["pools"][0]["members"]
        except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
            return
        if not members or any(m["state"] != "up" for m in members):
            return
        keys = [o[0] for o in self.st["objects"] if o[1] == 3 and o[2] == 0]
        if not keys or not self.st["slots"]:
            return
        c = self.open()
        data = prefix + self.r.randbytes(16)
        c.send(self.frame(u32(7) + u64(self.st["slots"][0]) + u64(1) + bytes([0]) +
                          u64(keys[0]) + y(data)))
        self.stats.poison["sent"] += 1
        try:
            _, rv, _ = c.reply(120)
            Stats.inc(self.stats.poison["answers"], RV.get(rv, "0x%x" % rv))
        except (Closed, socket.timeout):
            Stats.inc(self.stats.poison["answers"], "no answer")
        c.close()

    def run(self, seconds, poison=None):
        deadline = time.time() + seconds
        conns = [self.open() for _ in range(3)]
        next_poison = time.time() + 10
        while time.time() < deadline:
            if poison and time.time() >= next_poison:
                self.poison(*poison)
                next_poison = time.time() + 20
            try:
                self.one(conns, self.r.randrange(len(conns)))
            except (Closed, OSError) as e:
                Stats.inc(self.stats.closed, "reconnect failed: %s" % type(e).__name__)
                time.sleep(0.1)
                for i in range(len(conns)):
                    try:
                        conns[i].close()
                        conns[i] = self.open()
                    except (Closed, OSError):
                        pass
        for c in conns:
            c.close()
        return self.stats


def worker(args):
    path, pin, seconds, seed, poison = args
    st = {"slots": [], "objects": [], "made": [], "may_guess": True,
          "app": random.Random(seed).getrandbits(64)}
    c = Client(path, pin, seed, st)
    c.setup()
    s = c.run(seconds, poison)
    s.guessed = st.get("guessed", 0)
    return s.__dict__


def merge(results):
    out = {"sent": {}, "replies": {}, "mutations": {}, "closed": {}, "timeouts": {}, "abandoned": {},
           "late": [], "poison": {"sent": 0, "answers": {}}, "wrong_pins": 0, "broken": [],
           "replies_by_call": {}}
    for r in results:
        for k in ("sent", "replies", "mutations", "closed", "timeouts", "abandoned",
                  "replies_by_call"):
            for kk, v in r[k].items():
                Stats.inc(out[k], kk, v)
        out["late"] += r["late"]
        out["broken"] += r["broken"]
        out["poison"]["sent"] += r["poison"]["sent"]
        for kk, v in r["poison"]["answers"].items():
            Stats.inc(out["poison"]["answers"], kk, v)
        out["wrong_pins"] += r["guessed"]
    return out


def main(argv):
    path, pin, seconds, procs, out = argv[1], argv[2].encode(), float(argv[3]), int(argv[4]), argv[5]
    poison = (argv[7], bytes.fromhex(argv[6])) if len(argv) > 7 else None
    seed = int(os.environ.get("FUZZ_SEED", str(int(time.time()))))
    print("fuzz_socket: seed %d (FUZZ_SEED=%d repeats the choices)" % (seed, seed), flush=True)
    jobs = [(path, pin, seconds, seed * 1000 + i, poison if i == 0 else None)
            for i in range(procs)]
    with multiprocessing.Pool(procs) as p:
        results = p.map(worker, jobs)
    res = merge(results)
    res["seed"] = seed
    with open(out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    objs = sorted((k, v) for k, v in res["replies_by_call"].items()
                  if k.split()[0] in ("CLIENT", "CREATE", "GENERATE", "GENERATE_PAIR", "DESTROY",
                                      "DROP"))
    print("fuzz_socket: session-object calls' replies: " + ", ".join("%s %d" % kv for kv in objs),
          flush=True)
    if res["broken"]:
        print("fuzz_socket: session-object invariants broken (%d): %s" %
              (len(res["broken"]), "; ".join(res["broken"][:5])), flush=True)
        sys.exit(4)


if __name__ == "__main__":
    main(sys.argv)
