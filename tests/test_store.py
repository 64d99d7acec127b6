"""The versioned Parquet store: content-hash versions, atomic writes, old versions readable, any fsspec URL."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from synthflow.store import Store, VersionNotFound, content_hash


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path) -> Store:
    if request.param == "memory":
        return Store(f"memory://synthflow-test-{uuid.uuid4().hex}")
    return Store(str(tmp_path / "store"))


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
