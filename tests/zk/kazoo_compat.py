#!/usr/bin/env python3
"""kazoo (the PyPI ZooKeeper client, unchanged) against an hstack ensemble.

Run by tests/tests/it/zk_compat.rs against three real members:
  HSTACK_ZK_HOSTS   host:port of each member's ZooKeeper port, comma-separated
  HSTACK_ZK_PIDS    each member's pid, in the same order (the last test
                    SIGKILLs the member a client is connected to)
  HSTACK_ZK_SUPER   the superuser's user:password (the ensemble runs with
                    its digest as superuser_digest)
Each test prints PASS or FAIL; the exit status is the number of failures.
"""

import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import kazoo.exceptions as E
from kazoo.client import KazooClient
from kazoo.exceptions import LockTimeout
from kazoo.protocol.states import KazooState
from kazoo.security import make_acl, make_digest_acl, ACL, Id

HOSTS = os.environ["HSTACK_ZK_HOSTS"].split(",")
PIDS = [int(p) for p in os.environ["HSTACK_ZK_PIDS"].split(",")]
SUPER = os.environ.get("HSTACK_ZK_SUPER", "")
# The slowest test takes about 10 s here; a test past this is hung.
PER_TEST_TIMEOUT = float(os.environ.get("HSTACK_ZK_TEST_TIMEOUT", "90"))
# kazoo's own warnings (reconnects, lost connections) go to stderr, which
# the harness prints when the script fails.
logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")


def client(hosts=None, **kw):
    kw.setdefault("timeout", 10.0)
    zk = KazooClient(hosts=",".join(hosts or HOSTS), **kw)
    zk.start(timeout=15)
    return zk


def wait_for(cond, what, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc:
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"expected {exc.__name__}, got success")


def test_crud_and_stat():
    zk = client()
    try:
        zk.ensure_path("/crud")
        path = zk.create("/crud/a", b"hello")
        assert path == "/crud/a", path
        data, st = zk.get("/crud/a")
        assert data == b"hello"
        assert st.version == 0 and st.dataLength == 5 and st.numChildren == 0
        assert st.czxid == st.mzxid == st.pzxid and st.czxid > 0
        assert st.ephemeralOwner == 0 and st.aversion == 0 and st.ctime == st.mtime
        st2 = zk.set("/crud/a", b"hi")
        assert st2.version == 1 and st2.dataLength == 2 and st2.mzxid > st.mzxid
        assert st2.czxid == st.czxid and st2.mtime >= st.mtime
        # A child moves the parent's cversion, pzxid and numChildren.
        _, p0 = zk.get("/crud")
        zk.create("/crud/a/b", b"")
        _, p1 = zk.get("/crud/a")
        assert p1.numChildren == 1 and p1.cversion == 1 and p1.pzxid > st2.mzxid
        assert zk.get_children("/crud/a") == ["b"]
        kids, cst = zk.get_children("/crud/a", include_data=True)
        assert kids == ["b"] and cst.numChildren == 1
        assert zk.exists("/crud/missing") is None
        assert zk.exists("/crud/a").version == 1
        # Sequential names: ten digits, the parent's cversion.
        names = [zk.create("/crud/seq-", b"", sequence=True) for _ in range(3)]
        nums = [int(n[-10:]) for n in names]
        assert all(len(n) == len("/crud/seq-") + 10 for n in names), names
        assert nums == sorted(nums) and len(set(nums)) == 3, names
        zk.delete("/crud/a", recursive=True)
        assert zk.exists("/crud/a") is None
        # Binary data round-trips; empty data and a 1 MB-ish value too.
        blob = bytes(range(256)) * 1000
        zk.create("/crud/blob", blob)
        assert zk.get("/crud/blob")[0] == blob
        zk.set("/crud/blob", b"")
        assert zk.get("/crud/blob")[0] == b""
        zk.sync("/crud")
        zk.delete("/crud", recursive=True)
    finally:
        zk.stop()


def test_error_codes():
    zk = client()
    try:
        zk.ensure_path("/err")
        raises(E.NoNodeError, zk.get, "/err/missing")
        raises(E.NoNodeError, zk.set, "/err/missing", b"")
        raises(E.NoNodeError, zk.delete, "/err/missing")
        raises(E.NoNodeError, zk.create, "/err/no/parent", b"")
        zk.create("/err/x", b"")
        raises(E.NodeExistsError, zk.create, "/err/x", b"")
        raises(E.BadVersionError, zk.set, "/err/x", b"", version=7)
        raises(E.BadVersionError, zk.delete, "/err/x", version=3)
        zk.create("/err/x/child", b"")
        raises(E.NotEmptyError, zk.delete, "/err/x")
        zk.create("/err/eph", b"", ephemeral=True)
        raises(E.NoChildrenForEphemeralsError, zk.create, "/err/eph/kid", b"")
        raises(E.InvalidACLError, zk.create, "/err/badacl", b"",
               acl=[ACL(31, Id("world", "someone"))])
        raises(E.InvalidACLError, zk.create, "/err/badacl", b"",
               acl=[ACL(31, Id("kerberos", "x"))])
        # An auth ACL with no authenticated identity is invalid too.
        raises(E.InvalidACLError, zk.create, "/err/badacl", b"", acl=[make_acl("auth", "", all=True)])
        zk.create("/err/locked", b"", acl=[make_digest_acl("owner", "pw", all=True)])
        raises(E.NoAuthError, zk.get, "/err/locked")
        raises(E.NoAuthError, zk.set, "/err/locked", b"")
        zk.delete("/err", recursive=True) if False else None
    finally:
        zk.stop()
    # The locked node's owner cleans up.
    owner = client(auth_data=[("digest", "owner:pw")])
    try:
        owner.delete("/err", recursive=True)
    finally:
        owner.stop()
    # A session that is gone: resuming it is refused as expired.
    zk = client()
    sid, pw = zk.client_id
    zk.stop()
    zk.close()
    stale = KazooClient(hosts=",".join(HOSTS), client_id=(sid, pw), timeout=10.0)
    states = []
    stale.add_listener(lambda s: states.append(s))
    try:
        try:
            stale.start(timeout=5)
        except Exception:  # noqa: BLE001 - kazoo times out or raises: either shows it
            pass
        wait_for(lambda: KazooState.LOST in states or stale.client_id != (sid, pw),
                 "the expired session to be refused")
        assert stale.client_id is None or stale.client_id[0] != sid, stale.client_id
    finally:
        stale.stop()
        stale.close()


def test_ephemerals_go_with_the_session():
    zk = client()
    watcher = client()
    try:
        zk.ensure_path("/eph")
        zk.create("/eph/mine", b"", ephemeral=True)
        owner = watcher.exists("/eph/mine").ephemeralOwner
        assert owner == zk.client_id[0], (owner, zk.client_id)
        zk.stop()
        wait_for(lambda: watcher.exists("/eph/mine") is None, "the ephemeral to go at close")
        # A client process SIGKILLed: its ephemeral goes when the session expires.
        child = subprocess.Popen(
            [sys.executable, "-c", (
                "import sys,time\n"
                "from kazoo.client import KazooClient\n"
                f"zk=KazooClient(hosts={','.join(HOSTS)!r}, timeout=2.0); zk.start(timeout=15)\n"
                "zk.create('/eph/killed', b'', ephemeral=True)\n"
                "print('ready', flush=True); sys.stdin.read()\n"
            )],
            # It lives until killed or until this script's end closes its
            # stdin, so a failed check cannot leave it holding the pipes.
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            assert watcher.exists("/eph/killed") is not None
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        wait_for(lambda: watcher.exists("/eph/killed") is None,
                 "the killed client's ephemeral to expire", timeout=20)
        watcher.delete("/eph", recursive=True)
    finally:
        watcher.stop()


def test_one_shot_watches():
    zk = client()
    other = client()
    try:
        zk.ensure_path("/w")
        events = []
        done = threading.Event()

        def record(ev):
            events.append((ev.type, ev.path))
            done.set()

        zk.create("/w/a", b"1")
        zk.get("/w/a", watch=record)
        other.set("/w/a", b"2")
        assert done.wait(10)
        other.set("/w/a", b"3")  # one-shot: no second event
        zk.sync("/w")
        time.sleep(0.3)
        assert events == [("CHANGED", "/w/a")], events
        # exists on a missing node fires on create; children on a new child.
        events.clear()
        done.clear()
        assert zk.exists("/w/b", watch=record) is None
        other.create("/w/b", b"")
        assert done.wait(10)
        done.clear()
        zk.get_children("/w", watch=record)
        other.create("/w/c", b"")
        assert done.wait(10)
        done.clear()
        zk.get("/w/c", watch=record)
        other.delete("/w/c")
        assert done.wait(10)
        time.sleep(0.2)
        assert events == [("CREATED", "/w/b"), ("CHILD", "/w"), ("DELETED", "/w/c")], events
        # A watch event arrives before the reply of any read after the change.
        order = []
        zk.get("/w/a", watch=lambda ev: order.append("event"))
        other.set("/w/a", b"4")
        zk.sync("/w")
        data, _ = zk.get("/w/a")
        order.append("read")
        assert data == b"4"
        wait_for(lambda: "event" in order, "the event")
        assert order.index("event") < order.index("read"), order
        # kazoo's recipes on top: DataWatch and ChildrenWatch.
        seen = []
        zk.DataWatch("/w/a", lambda d, s: seen.append(d))
        other.set("/w/a", b"5")
        wait_for(lambda: b"5" in seen, "DataWatch")
        kids = []
        zk.ChildrenWatch("/w", lambda c: kids.append(sorted(c)))
        other.create("/w/d", b"")
        wait_for(lambda: kids and "d" in kids[-1], "ChildrenWatch")
        zk.delete("/w", recursive=True)
    finally:
        zk.stop()
        other.stop()


class AddWatch:
    """ZooKeeper 3.6's addWatch (opcode 106), which kazoo 2.x cannot send:
    a request object kazoo's connection serializes like its own."""

    type = 106

    def __init__(self, path, mode):
        self.path, self.mode = path, mode

    def serialize(self):
        import struct
        p = self.path.encode()
        return struct.pack("!i", len(p)) + p + struct.pack("!i", self.mode)

    @classmethod
    def deserialize(cls, buf, offset):
        return True


def test_persistent_watches():
    zk = client()
    other = client()
    try:
        zk.ensure_path("/pw/sub")
        raw = []
        conn = zk._connection
        original = conn._read_watch_event

        def spy(buf, offset):
            from kazoo.protocol.serialization import Watch
            watch, _ = Watch.deserialize(buf, offset)
            raw.append((watch.type, watch.path))
            return original(buf, offset)

        conn._read_watch_event = spy
        res = zk.handler.async_result()
        zk._call(AddWatch("/pw", 0), res)  # PERSISTENT
        assert res.get(timeout=10) is True
        res = zk.handler.async_result()
        zk._call(AddWatch("/pw/sub", 1), res)  # PERSISTENT_RECURSIVE
        assert res.get(timeout=10) is True
        for v in (b"1", b"2", b"3"):
            other.set("/pw", v)
        other.create("/pw/sub/deep", b"")
        other.set("/pw/sub/deep", b"x")
        zk.sync("/pw")
        wait_for(lambda: len(raw) >= 5, f"five events, got {raw}")
        time.sleep(0.3)
        changed_pw = [e for e in raw if e == (3, "/pw")]
        assert len(changed_pw) == 3, raw  # persistent: every change, not once
        assert (4, "/pw") not in raw, raw  # /pw/sub's new child is not /pw's
        assert (1, "/pw/sub/deep") in raw and (3, "/pw/sub/deep") in raw, raw
        zk.delete("/pw", recursive=True)
    finally:
        zk.stop()
        other.stop()


def test_transactions():
    zk = client()
    try:
        zk.ensure_path("/tx")
        t = zk.transaction()
        t.create("/tx/a", b"1")
        t.create("/tx/b", b"2")
        t.set_data("/tx/a", b"3")
        t.check("/tx/a", 1)
        results = t.commit()
        assert results[0] == "/tx/a" and results[1] == "/tx/b", results
        assert results[2].version == 1 and results[3] is True, results
        # A failing op: nothing applies; earlier ops roll back, later ones too.
        t = zk.transaction()
        t.create("/tx/c", b"")
        t.delete("/tx/missing")
        t.set_data("/tx/a", b"never")
        results = t.commit()
        assert isinstance(results[0], E.RolledBackError), results
        assert isinstance(results[1], E.NoNodeError), results
        assert isinstance(results[2], E.RuntimeInconsistency), results
        assert zk.exists("/tx/c") is None and zk.get("/tx/a")[0] == b"3"
        t = zk.transaction()
        t.check("/tx/a", 9)
        t.delete("/tx/a")
        results = t.commit()
        assert isinstance(results[0], E.BadVersionError), results
        assert zk.exists("/tx/a") is not None
        zk.delete("/tx", recursive=True)
    finally:
        zk.stop()


def test_acls():
    alice = client(auth_data=[("digest", "alice:secret")])
    bob = client(auth_data=[("digest", "bob:other")])
    anon = client()
    try:
        acl = make_digest_acl("alice", "secret", all=True)
        alice.create("/acl", b"mine", acl=[acl, make_acl("world", "anyone", read=True)])
        # Each client may sit on another member: as with ZooKeeper, a read
        # sees another session's write after a sync, not before.
        anon.sync("/acl")
        bob.sync("/acl")
        acls, st = anon.get_acls("/acl")
        assert len(acls) == 2 and st.aversion == 0, acls
        assert anon.get("/acl")[0] == b"mine"  # world may read
        raises(E.NoAuthError, bob.set, "/acl", b"bob")
        raises(E.NoAuthError, bob.create, "/acl/kid", b"")
        raises(E.NoAuthError, bob.set_acls, "/acl", [make_acl("world", "anyone", all=True)])
        alice.set("/acl", b"still mine")
        alice.create("/acl/kid", b"", acl=[make_acl("auth", "", all=True)])
        kid_acls, _ = alice.get_acls("/acl/kid")
        assert kid_acls[0].id.scheme == "digest" and kid_acls[0].id.id.startswith("alice:"), kid_acls
        bob.sync("/acl/kid")
        raises(E.NoAuthError, bob.get, "/acl/kid")
        # setACL checks the ACL version.
        raises(E.BadVersionError, alice.set_acls, "/acl", [acl], version=5)
        st = alice.set_acls("/acl", [acl], version=0)
        assert st.aversion == 1, st
        anon.sync("/acl")
        raises(E.NoAuthError, anon.get, "/acl")  # world lost read
        # add_auth on a live session grants from then on.
        bob.add_auth("digest", "alice:secret")
        bob.sync("/acl")
        assert bob.get("/acl")[0] == b"still mine"
        # Credentials the server refuses: AuthFailed, and that connection ends.
        doomed = client()
        try:
            raises(E.AuthFailedError, doomed.add_auth, "kerberos", "x")
        finally:
            doomed.stop()
        if SUPER:
            root = client(auth_data=[("digest", SUPER)])
            try:
                root.sync("/acl/kid")
                assert root.get("/acl/kid")[0] == b""
                root.delete("/acl/kid")
                root.delete("/acl")
            finally:
                root.stop()
        else:
            alice.delete("/acl/kid")
            alice.delete("/acl")
    finally:
        for zk in (alice, bob, anon):
            zk.stop()


def test_recipes():
    a, b, c = client(), client(), client()
    try:
        # Lock: the second waits until the first releases.
        la, lb = a.Lock("/recipes/lock", "a"), b.Lock("/recipes/lock", "b")
        assert la.acquire(timeout=10)
        raises(LockTimeout, lb.acquire, timeout=0.5)
        got = threading.Event()
        threading.Thread(target=lambda: lb.acquire(timeout=20) and got.set()).start()
        time.sleep(0.3)
        assert not got.is_set()
        la.release()
        assert got.wait(20)
        lb.release()
        # Election: one leads; when it leaves, the other does.
        leaders = []
        leave_a = threading.Event()

        def lead(name, leave):
            leaders.append(name)
            leave.wait(30)

        ea, eb = a.Election("/recipes/election", "a"), b.Election("/recipes/election", "b")
        leave_b = threading.Event()
        threading.Thread(target=ea.run, args=(lead, "a", leave_a), daemon=True).start()
        wait_for(lambda: leaders == ["a"], "a to lead")
        threading.Thread(target=eb.run, args=(lead, "b", leave_b), daemon=True).start()
        time.sleep(0.5)
        assert leaders == ["a"], leaders
        assert sorted(ea.contenders()) == ["a", "b"], ea.contenders()
        leave_a.set()
        wait_for(lambda: leaders == ["a", "b"], "b to lead")
        leave_b.set()
        # Counter: concurrent increments all count.
        def bump(zk):
            ctr = zk.Counter("/recipes/counter")
            for _ in range(20):
                ctr += 1

        ts = [threading.Thread(target=bump, args=(zk,)) for zk in (a, b, c)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert a.Counter("/recipes/counter").value == 60
        # Barrier: waits while it stands, passes once removed.
        bar = a.Barrier("/recipes/barrier")
        bar.create()
        assert b.Barrier("/recipes/barrier").wait(timeout=0.3) is False
        opened = threading.Event()
        threading.Thread(target=lambda: b.Barrier("/recipes/barrier").wait(20) and opened.set()).start()
        time.sleep(0.2)
        bar.remove()
        assert opened.wait(20)
        # Queue: FIFO across clients.
        qa, qb = a.Queue("/recipes/queue"), b.Queue("/recipes/queue")
        for item in (b"1", b"2", b"3"):
            qa.put(item)
        assert [qb.get(), qb.get(), qb.get()] == [b"1", b"2", b"3"]
        assert qb.get() is None
        # Semaphore: at most two holders.
        sems = [zk.Semaphore("/recipes/sem", max_leases=2) for zk in (a, b, c)]
        assert sems[0].acquire(timeout=10) and sems[1].acquire(timeout=10)
        try:
            third = sems[2].acquire(timeout=0.5)
        except LockTimeout:
            third = False
        assert not third
        sems[0].release()
        assert sems[2].acquire(timeout=10)
        sems[1].release()
        sems[2].release()
        a.delete("/recipes", recursive=True)
    finally:
        for zk in (a, b, c):
            zk.stop()


def test_sigkill_of_the_connected_member():
    """Last: it kills a member. The session survives on another member;
    the listener sees SUSPENDED then CONNECTED; the lock and the ephemeral
    are still there."""
    zk = KazooClient(hosts=HOSTS[0], timeout=10.0)  # only member 1 at first
    states = []
    zk.add_listener(lambda s: states.append(s))
    zk.start(timeout=15)
    other = client(hosts=HOSTS[1:])
    try:
        sid = zk.client_id[0]
        zk.ensure_path("/kill")
        lock = zk.Lock("/kill/lock", "survivor")
        assert lock.acquire(timeout=10)
        zk.create("/kill/eph", b"", ephemeral=True)
        events = []
        # Let the client fail over to the others.
        zk.set_hosts(",".join(HOSTS))
        os.kill(PIDS[0], signal.SIGKILL)
        wait_for(lambda: KazooState.SUSPENDED in states, "SUSPENDED", timeout=30)
        wait_for(lambda: states and states[-1] == KazooState.CONNECTED, "CONNECTED again", timeout=30)
        assert zk.client_id[0] == sid, "the session must survive"
        assert KazooState.LOST not in states, states
        assert other.exists("/kill/eph").ephemeralOwner == sid
        assert lock.is_acquired
        contender = other.Lock("/kill/lock", "other")
        raises(LockTimeout, contender.acquire, timeout=1)
        # kazoo sends no setWatches on reconnect (ZooKeeper drops a
        # connection's watches with it; zkCli.sh's test covers setWatches):
        # a watch set on the new member works.
        zk.get("/kill/eph", watch=lambda ev: events.append(ev.type))
        other.set("/kill/eph", b"changed")
        wait_for(lambda: "CHANGED" in events, "a watch on the new member")
        lock.release()
        assert contender.acquire(timeout=10)
        contender.release()
        zk.delete("/kill/eph")
        other.delete("/kill", recursive=True)
    finally:
        zk.stop()
        other.stop()


TESTS = [
    test_crud_and_stat,
    test_error_codes,
    test_ephemerals_go_with_the_session,
    test_one_shot_watches,
    test_persistent_watches,
    test_transactions,
    test_acls,
    test_recipes,
    test_sigkill_of_the_connected_member,
]


def main():
    only = sys.argv[1:]
    failures = 0
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        start = time.time()
        # A test that hangs fails fast, with every thread's stack on stderr,
        # instead of holding the suite until the harness's timeout.
        faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True)
        try:
            t()
            print(f"PASS {t.__name__} ({time.time() - start:.1f}s)", flush=True)
        except Exception:  # noqa: BLE001
            failures += 1
            print(f"FAIL {t.__name__}", flush=True)
            traceback.print_exc()
        finally:
            faulthandler.cancel_dump_traceback_later()
    sys.exit(failures)


if __name__ == "__main__":
    main()
