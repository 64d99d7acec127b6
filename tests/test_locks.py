"""The store's per-(pipeline, partition) lock: a second holder is refused with the holder named; locks of killed
processes and locks past their lease are taken over; a live holder's heartbeat keeps a long round locked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from synthflow.store import LockHeld, Store

_HOLD = """
import sys, time
from synthflow.store import Store
store = Store(sys.argv[1])
with store.lock("p", "2026-01-01", owner="test holder", lease_s=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
print("released", flush=True)
"""


def _holder(root, lease_s: float = 120, hold_s: float = 60) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(root), str(lease_s), str(hold_s)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder(tmp_path):
    store = Store(str(tmp_path / "store"))
    proc = _holder(tmp_path / "store")
    try:
        with pytest.raises(LockHeld) as info:
            store.lock("p", "2026-01-01").acquire()
        msg = str(info.value)
        assert f"host {socket.gethostname()}, pid {proc.pid}, since 20" in msg and "test holder" in msg
        assert msg.startswith("p [2026-01-01] is being run by")
        with store.lock("p", "2026-01-02"):  # another partition is free
            pass
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    store = Store(str(tmp_path / "store"))
    proc = _holder(tmp_path / "store")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = store.lock("p", "2026-01-01")
    assert lock.read() is not None and lock.read().pid == proc.pid  # the dead holder's file is still there
    t0 = time.monotonic()
    with lock:
        assert lock.read().pid == os.getpid()
    assert time.monotonic() - t0 < 2
    assert lock.read() is None


def test_lock_from_another_host_counts_until_its_lease_runs_out(tmp_path):
    store = Store(str(tmp_path / "store"))
    lock = store.lock("p", "2026-01-01")
    now = time.time()
    foreign = {"host": "elsewhere", "pid": 1, "started_at": now - 3600, "heartbeat_at": now - 5, "lease_s": 60,
               "token": uuid.uuid4().hex, "owner": ""}
    store.write_bytes_atomic(lock.path, json.dumps(foreign).encode())
    with pytest.raises(LockHeld, match="host elsewhere, pid 1"):
        lock.acquire()
    store.write_bytes_atomic(lock.path, json.dumps({**foreign, "heartbeat_at": now - 61}).encode())
    with lock:  # silent for longer than its lease: stale
        assert lock.read().host == socket.gethostname()


def test_heartbeat_keeps_a_long_round_locked_and_waiters_get_it_after(tmp_path):
    store = Store(str(tmp_path / "store"))
    proc = _holder(tmp_path / "store", lease_s=0.4, hold_s=2.5)
    try:
        time.sleep(1.2)  # three leases: only the heartbeat keeps the lock fresh
        with pytest.raises(LockHeld):
            store.lock("p", "2026-01-01", lease_s=0.4).acquire()
        t0 = time.monotonic()
        with store.lock("p", "2026-01-01", wait_s=30, lease_s=0.4):  # waits for the release
            assert proc.stdout.readline().strip() == "released"
        assert time.monotonic() - t0 < 10
    finally:
        proc.kill()
        proc.wait()


def test_lock_on_an_object_store_uses_exclusive_create():
    store = Store(f"memory://locks-{uuid.uuid4().hex}")
    with store.lock("p", None, owner="first"), pytest.raises(LockHeld, match="first"):
        store.lock("p", None).acquire()
    with store.lock("p", None):
        pass
