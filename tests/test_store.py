"""The versioned store (Delta tables): content-hash versions, atomic writes, old versions readable, local paths and
file:// URLs (memory:// holds no tables: delta-rs has no shared in-memory store)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from synthflow.generators.base import GenerationResult
from synthflow.stages.cache import ResultCache
from synthflow.store import Store, StoreError, VersionNotFound, content_hash


@pytest.fixture(params=["file-url", "local"])
def store(request, tmp_path) -> Store:
    if request.param == "file-url":
        return Store(f"file://{tmp_path}/store-{uuid.uuid4().hex}")
    return Store(str(tmp_path / "store"))


def test_memory_store_refuses_tables_in_one_line():
    store = Store(f"memory://synthflow-test-{uuid.uuid4().hex}")
    with pytest.raises(StoreError, match=r"^cannot write tables to memory://.*not memory://$"):
        store.write("p", "t", pd.DataFrame({"x": [1]}))


def test_versions_are_content_hashes_and_stay_readable(store):
    a = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    b = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    r1 = store.write("p", "t", a, partition="2026-01-01")
    r2 = store.write("p", "t", b, partition="2026-01-01")
    assert r1.version == content_hash(a) and r2.version != r1.version
    assert [v.version for v in store.versions("p", "t", "2026-01-01")] == [r1.version, r2.version]
    pd.testing.assert_frame_equal(store.read("p", "t", "2026-01-01"), b)
    pd.testing.assert_frame_equal(store.read("p", "t", "2026-01-01", version=r1.version), a)
    pd.testing.assert_frame_equal(store.read("p", "t", "2026-01-01", version=r1.version[:8]), a)


def test_identical_content_gives_identical_version(store):
    a = pd.DataFrame({"x": [1.5, 2.5]})
    assert store.write("p", "t", a).version == store.write("p", "t", a.copy()).version
    assert content_hash(a) != content_hash(a.rename(columns={"x": "z"}))


def test_missing_versions_raise_clearly(store):
    with pytest.raises(VersionNotFound, match="never been written"):
        store.read("p", "nothing")
    store.write("p", "t", pd.DataFrame({"x": [1]}))
    with pytest.raises(VersionNotFound, match="no version 'deadbeef'"):
        store.read("p", "t", version="deadbeef")


def test_failed_write_leaves_nothing_visible(store):
    good = pd.DataFrame({"x": [1]})
    store.write("p", "t", good)
    bad = pd.DataFrame({"x": [object()]})  # not serializable to Parquet
    with pytest.raises(Exception):  # noqa: B017 - pyarrow raises several types here
        store.write("p", "t", bad)
    assert len(store.versions("p", "t")) == 1
    pd.testing.assert_frame_equal(store.read("p", "t"), good)
    leftovers = [p for p in store.fs.find(store.path("p", "t")) if "/.tmp-" in p]
    assert leftovers == []


# -- faults: paths that cannot be created, full disks (issue 12, case 13) ---------------------------------------


def test_store_path_that_cannot_be_created_names_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(StoreError) as info:
        Store(str(blocker / "store"))
    msg = str(info.value)
    assert "\n" not in msg and str(blocker / "store") in msg and "Not a directory" in msg


@contextlib.contextmanager
def _tiny_tmpfs(path: Path, size: str = "256k"):
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _noise(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [uuid.uuid4().hex * 8 for _ in range(rows)]})  # incompressible


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".tmp-*")]


def test_full_disk_names_the_path_and_leaves_no_temp_files(tmp_path):
    with _tiny_tmpfs(tmp_path / "disk") as disk:
        store = Store(str(disk / "store"))
        store.write("p", "t", _noise(10))
        with pytest.raises(StoreError) as info:
            store.write("p", "t", _noise(20_000))  # ~5 MB into 256 kB
        msg = str(info.value)
        assert "No space left on device" in msg and f"{disk}/store/p/t/_table" in msg and "\n" not in msg
        assert _leftovers(disk) == []
        assert len(store.versions("p", "t")) == 1  # the earlier version is untouched and still the latest
        # The request cache's fsynced log fails the same way, naming its file.
        cache = ResultCache(store, "p")
        with pytest.raises(StoreError, match=rf"cannot write {disk}/store/p/_cache/generations/.*No space left"):
            for i in range(20_000):
                cache.put(GenerationResult(key=f"k{i}", text=uuid.uuid4().hex * 8, model="m"))
        assert _leftovers(disk) == []


_FSIZE_SCRIPT = """
import resource, signal, sys, uuid
import pandas as pd
from synthflow.store import Store, StoreError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
store = Store(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    store.write("p", "t", pd.DataFrame({"x": [uuid.uuid4().hex * 8 for _ in range(20_000)]}))
except StoreError as e:
    print(e)
    sys.exit(3)
"""


def test_file_size_limit_names_the_path_and_leaves_no_temp_files(tmp_path):
    root = tmp_path / "store"
    done = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(root)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"cannot write {root}/p/t/_table") and "File too large" in done.stdout
    assert _leftovers(root) == []
