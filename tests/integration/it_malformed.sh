#!/usr/bin/env bash
# Whatever a client sends, the daemon closes that connection only and keeps serving others.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
PIN=$PIN python3 - "$SOCK" <<'PY'
import socket, struct, sys, os
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)
    return s
def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
hello = struct.pack(">IQQQ", 1, 0x50313158, 3, 3)  # protocol version 3
cases = {
    "oversized length": struct.pack(">I", 0x7fffffff) + b"x" * 16,
    "unknown call": struct.pack(">I", 4) + struct.pack(">I", 999),
    "no handshake": struct.pack(">I", 4) + struct.pack(">I", 2),
    "bad magic": struct.pack(">I", 28) + struct.pack(">IQQQ", 1, 1234, 1, 1),
    "truncated hello": struct.pack(">I", 8) + struct.pack(">II", 1, 0),
    "trailing bytes": struct.pack(">I", len(hello) + 3) + hello + b"abc",
}
for name, data in cases.items():
    s = conn()
    s.sendall(data)
    assert closed(s), name
    s.close()
# After a good handshake: an attribute list claiming 2^32-1 entries, a huge byte string,
# a mechanism with an unknown parameter kind, random bytes.
def after_hello(payload):
    s = conn()
    s.sendall(struct.pack(">I", len(hello)) + hello)
    n = struct.unpack(">I", s.recv(4))[0]
    s.recv(n)
    s.sendall(struct.pack(">I", len(payload)) + payload)
    return s
bad = [
    struct.pack(">IQI", 5, 0, 0xffffffff),
    struct.pack(">IQ", 7, 0) + struct.pack(">QB", 1, 9) + struct.pack(">QI", 1, 0xfffffff0),
    struct.pack(">IQ", 7, 0) + struct.pack(">QB", 0x250, 1) + struct.pack(">I", 8) + b"\0" * 8 + struct.pack(">QI", 1, 0),
]
for i in range(200):
    bad.append(struct.pack(">I", 1 + i % 12) + os.urandom(i % 50))
for payload in bad:
    s = after_hello(payload)
    assert closed(s) or True  # some random payloads are valid calls; both outcomes are fine
    s.close()
print("malformed frames sent:", len(cases) + len(bad))
# Well-formed, but more data than an operation may carry (P11MUX_DATA_MAX): a DIGEST that
# fills a whole frame is refused with CKR_DATA_LEN_RANGE at once, and no member pays for it.
FRAME_MAX = 1 << 20
n = FRAME_MAX - (4 + 8 + 9 + 4)
s = after_hello(struct.pack(">IQQBI", 11, 0, 0x250, 0, n) + b"\0" * n)
hdr = s.recv(4)
assert len(hdr) == 4, "no reply to a full-frame DIGEST"
reply = s.recv(struct.unpack(">I", hdr)[0])
call, rv = struct.unpack(">IQ", reply[:12])
assert (call, rv) == (11, 0x21), "full-frame DIGEST: call %d rv 0x%x" % (call, rv)
s.close()
print("a DIGEST of %d bytes: CKR_DATA_LEN_RANGE" % n)
# A FIND template of 40,000 attributes (about 10^8 comparisons before) is refused with
# CKR_ARGUMENTS_BAD at once, and the connection stays usable.
attrs = struct.pack(">QQB", 0x102, 0, 1) + struct.pack(">I", 1) + b"x"
s = after_hello(struct.pack(">IQI", 5, 0, 40000) + attrs * 40000)
def reply_of(s):
    n = struct.unpack(">I", s.recv(4))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return struct.unpack(">IQ", data[:12])
assert reply_of(s) == (5, 0x7), "a FIND of 40000 attributes was not refused"
one = struct.pack(">IQI", 5, 0, 1) + struct.pack(">QQB", 0x0, 0, 2) + struct.pack(">Q", 3)
s.sendall(struct.pack(">I", len(one)) + one)
assert reply_of(s) == (5, 0), "a FIND of 1 attribute after it"
s.close()
print("a FIND template of 40000 attributes: CKR_ARGUMENTS_BAD, the connection still serves")
# A mechanism of one key type on a key of another is refused before any device: SoftHSM 2.6
# calls exit(5) for CKM_RSA_X_509 on an EC key (found by scripts/fuzz-socket.sh).
def call(s, payload):
    s.sendall(struct.pack(">I", len(payload)) + payload)
    n = struct.unpack(">I", s.recv(4))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return struct.unpack(">IQ", data[:12])[1], data[12:]
s = after_hello(struct.pack(">I", 2))
n = struct.unpack(">I", s.recv(4))[0]
data = b""
while len(data) < n:
    data += s.recv(n - len(data))
slot = struct.unpack(">Q", data[16:24])[0]
pin = os.environ["PIN"].encode()
rv, _ = call(s, struct.pack(">IQQI", 3, slot, 1, len(pin)) + pin + struct.pack(">I", 0))
assert rv == 0, "login: 0x%x" % rv
for ktype, mech in ((3, 0x3), (3, 0x1), (3, 0x40), (0, 0x1041)):
    tmpl = struct.pack(">I", 2) + struct.pack(">QQBQ", 0x0, 0, 2, 3) + struct.pack(">QQBQ", 0x100, 0, 2, ktype)
    rv, h = call(s, struct.pack(">IQ", 5, slot) + tmpl)
    assert rv == 0 and struct.unpack(">I", h[:4])[0] == 1, "find key type %d: 0x%x" % (ktype, rv)
    key = struct.unpack(">Q", h[4:12])[0]
    rv, _ = call(s, struct.pack(">IQQBQI", 7, slot, mech, 0, key, 32) + b"\x01" * 32)
    assert rv == 0x63, "mechanism 0x%x on key type %d: 0x%x" % (mech, ktype, rv)
# Raw RSA input longer than the modulus (SoftHSM 2.6 calls exit(5) for CKM_RSA_X_509), and a
# signature longer than it, are refused before any device too.
def rsa_key(cls):
    tmpl = struct.pack(">I", 2) + struct.pack(">QQBQ", 0x0, 0, 2, cls) + struct.pack(">QQBQ", 0x100, 0, 2, 0)
    rv, h = call(s, struct.pack(">IQ", 5, slot) + tmpl)
    assert rv == 0 and struct.unpack(">I", h[:4])[0] == 1, "find RSA key of class %d: 0x%x" % (cls, rv)
    return struct.unpack(">Q", h[4:12])[0]
priv, pub = rsa_key(3), rsa_key(2)
long = b"\x01" * 257
for code, key, mech, sig, want in ((7, priv, 0x3, None, 0x21), (7, priv, 0x1, None, 0x21),
                                   (9, pub, 0x3, None, 0x21), (8, pub, 0x3, b"\x01" * 256, 0x21),
                                   (8, pub, 0x40, b"\x01" * 300, 0xc1),
                                   (10, priv, 0x3, None, 0x41)):
    req = struct.pack(">IQQBQI", code, slot, mech, 0, key, len(long)) + long
    if sig is not None:
        req = struct.pack(">IQQBQ", code, slot, mech, 0, key) + struct.pack(">I", 32 if mech == 0x40 else len(long)) + \
            (b"\x01" * 32 if mech == 0x40 else long) + struct.pack(">I", len(sig)) + sig
    rv, _ = call(s, req)
    assert rv == want, "call %d mechanism 0x%x: 0x%x, not 0x%x" % (code, mech, rv, want)
s.close()
print("RSA mechanisms on the EC key and ECDSA on the RSA key: CKR_KEY_TYPE_INCONSISTENT; raw RSA input or a signature longer than the modulus: refused")
PY
kill -0 "$DAEMON_PID" || fail "the daemon died"
"$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
ms = json.load(sys.stdin)["pools"][0]["members"]
assert all(m["state"] == "up" and m["helpers_started"] == 1 for m in ms), ms' ||
	fail "a member lost its helper to a client's request: $("$P11MUX_BUILD/p11muxctl" status)"
p11tool --login --pin "$PIN" -O | grep -q "Private Key Object" || fail "the daemon stopped serving"
grep -q "malformed request" "$WORK/daemon.log" || fail "malformed requests were not logged"
stop_daemon
pass "malformed frames closed their connection only; an oversized operation was refused, every helper kept"
