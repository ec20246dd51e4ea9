#!/usr/bin/env python3
"""Bad input on the ZooKeeper port, in raw jute frames: each gets the error
ZooKeeper gives or a closed connection, and nothing changes in the tree.

usage: bad_input.py HOST:PORT MAX_BUFFER
Leaves exactly one node, /ok, created by a well-formed request at the end
(the caller checks the tree holds nothing else).
"""

import socket
import struct
import sys

HOST, PORT = sys.argv[1].rsplit(":", 1)
PORT = int(PORT)
MAX = int(sys.argv[2])

NO_NODE, BAD_ARGUMENTS, UNIMPLEMENTED, INVALID_ACL = -101, -8, -6, -114
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def conn():
    s = socket.create_connection((HOST, int(PORT)), timeout=10)
    return s


def frame(body):
    return struct.pack("!i", len(body)) + body


def ustr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!i", len(b)) + b


def connect_request(session=0, passwd=b"\0" * 16, zxid=0):
    return frame(struct.pack("!iqiq", 0, zxid, 10000, session) + ustr(passwd) + b"\0")


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            return None
        out += b
    return out


def recv_frame(s):
    head = recv_exact(s, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!i", head)
    return recv_exact(s, n)


def closed(s):
    """True if the server closes the connection (after any pending bytes)."""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def session():
    s = conn()
    s.sendall(connect_request())
    resp = recv_frame(s)
    assert resp is not None, "no connect response"
    _, timeout, sid = struct.unpack("!iiq", resp[:16])
    assert timeout > 0 and sid != 0, (timeout, sid)
    return s


def request(s, xid, op, body):
    s.sendall(frame(struct.pack("!ii", xid, op) + body))
    r = recv_frame(s)
    if r is None:
        return None, None
    rxid, zxid, err = struct.unpack("!iqi", r[:16])
    assert rxid == xid, (rxid, xid)
    return err, r[16:]


def create_body(path, data=b"", flags=0, acl=True):
    acls = struct.pack("!i", 1) + struct.pack("!i", 31) + ustr("world") + ustr("anyone")
    if not acl:
        acls = struct.pack("!i", 0)
    return ustr(path) + ustr(data) + acls + struct.pack("!i", flags)


# 1. Garbage instead of a handshake.
s = conn()
s.sendall(b"\x00\x00\x00\x05hello")
check(closed(s), "garbage as the first frame closes the connection")
s = conn()
s.sendall(bytes(range(256)) * 4)
check(closed(s), "random bytes close the connection")

# 2. A request before the handshake (a create): closed, nothing created.
s = conn()
s.sendall(frame(struct.pack("!ii", 1, 1) + create_body("/before-handshake")))
check(closed(s), "a request before the handshake closes the connection")

# 3. Frames longer than jute.maxbuffer: closed, at the handshake and after.
s = conn()
s.sendall(struct.pack("!i", MAX + 1) + b"\0" * 64)
check(closed(s), "an oversized first frame closes the connection")
s = session()
s.sendall(struct.pack("!i", MAX + 1) + struct.pack("!ii", 1, 1))
check(closed(s), "an oversized request closes the connection")
s = session()
s.sendall(struct.pack("!i", -5))
check(closed(s), "a negative frame length closes the connection")

# 4. An unknown opcode: Unimplemented, then closed.
s = session()
err, _ = request(s, 7, 999, b"")
check(err == UNIMPLEMENTED, f"an unknown opcode gets Unimplemented (got {err})")
check(closed(s), "...and the connection closes")

# 5. A truncated request: closed.
s = session()
s.sendall(frame(struct.pack("!ii", 1, 4) + struct.pack("!i", 100) + b"/x"))
check(closed(s), "a truncated getData closes the connection")

# 6. Bad paths: BadArguments for writes, NoNode for reads; nothing created.
s = session()
for path in ["/bad/", "/a\0b", "relative", "/a//b", "/a/./b", ""]:
    err, _ = request(s, 10, 1, create_body(path))
    check(err == BAD_ARGUMENTS, f"create {path!r} gets BadArguments (got {err})")
err, _ = request(s, 11, 4, ustr("/bad/") + b"\0")
check(err == NO_NODE, f"getData '/bad/' gets NoNode (got {err})")
err, _ = request(s, 12, 5, ustr("/a\0b") + ustr(b"x") + struct.pack("!i", -1))
check(err in (BAD_ARGUMENTS, NO_NODE), f"setData with a NUL gets an error (got {err})")
# An empty ACL: InvalidACL; an unknown create mode: BadArguments.
err, _ = request(s, 13, 1, create_body("/noacl", acl=False))
check(err == INVALID_ACL, f"an empty ACL gets InvalidACL (got {err})")
err, _ = request(s, 14, 1, create_body("/badmode", flags=42))
check(err == BAD_ARGUMENTS, f"create mode 42 gets BadArguments (got {err})")
# The connection still works: a good create.
err, body = request(s, 15, 1, create_body("/ok", b"fine"))
check(err == 0, f"a good create after bad ones succeeds (got {err})")
s.close()

# 7. Resuming a session that never existed: ZooKeeper's expired answer
# (timeout 0), then closed.
s = conn()
s.sendall(connect_request(session=0x7777, passwd=b"x" * 16))
resp = recv_frame(s)
check(resp is not None and struct.unpack("!ii", resp[:8])[1] == 0,
      "resuming an unknown session gets timeout 0")
check(closed(s), "...and the connection closes")

# 8. A client that has seen a newer zxid than the member: refused.
s = conn()
s.sendall(connect_request(zxid=1 << 40))
check(closed(s), "a client ahead of the member is refused")

if failures:
    print(f"bad input: {len(failures)} checks failed")
    sys.exit(1)
print("bad input: all checks passed")
