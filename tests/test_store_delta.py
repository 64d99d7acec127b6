"""The store on Delta Lake (issue 14): appends write only the new rows, versions are content hashes that an append
and a full write agree on, every earlier version stays readable by synthflow and by Delta readers, a store of the
earlier layout is read as is and migrated, and DuckDB reads any round's training set without synthflow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from synthflow.store import Store, content_hash, migrate_store


def _rows(start: int, n: int, round_: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "_id": [f"r{round_}-{i}" for i in range(start, start + n)],
            "_text": [f"question number {i} of round {round_}" for i in range(start, start + n)],
            "_round": [round_] * n,
            "score": [i / 7 for i in range(start, start + n)],
        }
    )


def _table_files(store: Store, pipeline: str, asset: str) -> dict[str, int]:
    root = Path(store.data_file(pipeline, asset, "r1"))
    return {p.name: p.stat().st_size for p in root.glob("*.parquet")}


def test_append_writes_only_the_new_rows_and_versions_match_a_full_write(tmp_path):
    store = Store(str(tmp_path / "store"))
    first = _rows(0, 1000, 1)
    r1 = store.write("p", "training_set", first, partition="r1")
    files_before = _table_files(store, "p", "training_set")
    new = _rows(0, 200, 2)
    r2 = store.append("p", "training_set", new, base=r1, partition="r2")
    files_after = _table_files(store, "p", "training_set")
    added = set(files_after) - set(files_before)
    assert len(added) == 1 and set(files_before) <= set(files_after)  # r1's file is untouched, one new file
    (name,) = added
    assert pq.read_metadata(Path(store.data_file("p", "training_set", "r1")) / name).num_rows == 200
    full = pd.concat([first, new], ignore_index=True)
    assert r2.version == content_hash(full) and r2.rows == 1200
    pd.testing.assert_frame_equal(store.read("p", "training_set", "r2"), full)
    pd.testing.assert_frame_equal(store.read("p", "training_set", "r1"), first)
    # A full write of the same content is the same data version, and points at the version already stored.
    again = store.write("p", "training_set", full, partition="r2")
    assert again.version == r2.version and again.delta_version == r2.delta_version


def test_rerunning_an_earlier_round_restores_its_base_and_keeps_every_version(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    r1 = store.write("p", "ts", _rows(0, 10, 1), partition="r1")
    r2 = store.append("p", "ts", _rows(0, 5, 2), base=r1, partition="r2")
    r3 = store.append("p", "ts", _rows(0, 5, 3), base=r2, partition="r3")
    r2b = store.append("p", "ts", _rows(100, 3, 2), base=r1, partition="r2")  # round 2 run again, other rows
    assert store.read("p", "ts", "r2")["_id"].tolist() == [*_rows(0, 10, 1)["_id"], *_rows(100, 3, 2)["_id"]]
    assert len(store.read("p", "ts", "r3")) == 20  # round 3's version is untouched
    assert len(store.read("p", "ts", "r2", version=r2.version)) == 15
    # Time travel through delta-rs itself: each record names its Delta version.
    uri = store.table_uri("p", "ts")
    for rec in (r1, r2, r3, r2b):
        dt = DeltaTable(uri, version=rec.delta_version)
        assert sorted(dt.to_pyarrow_table().column("_id").to_pylist()) == sorted(store.read_record(rec)["_id"])


def test_append_of_rows_without_some_columns_is_an_append(tmp_path):
    store = Store(str(tmp_path / "store"))
    first = _rows(0, 4, 1).assign(seed_id=["a", "b", "c", "d"])
    r1 = store.write("p", "ts", first, partition="r1")
    r2 = store.append("p", "ts", _rows(0, 2, 2), base=r1, partition="r2")  # synthetic rows have no seed_id
    full = pd.concat([first, _rows(0, 2, 2)], ignore_index=True)
    assert len(r2.table["files"]) == 2 and r2.version == content_hash(full)
    assert store.read("p", "ts", "r2")["seed_id"].isna().sum() == 2


def test_append_that_cannot_join_the_base_writes_the_whole_table(tmp_path):
    store = Store(str(tmp_path / "store"))
    r1 = store.write("p", "ts", _rows(0, 4, 1), partition="r1")
    wider = _rows(0, 2, 2).assign(extra=["a", "b"])
    r2 = store.append("p", "ts", wider, base=r1, partition="r2")
    out = store.read("p", "ts", "r2")
    assert len(out) == 6 and out["extra"].isna().sum() == 4
    assert r2.version == content_hash(pd.concat([_rows(0, 4, 1), wider], ignore_index=True))


def _legacy_store(root: Path) -> list[pd.DataFrame]:
    """A store of the earlier layout: data/{hash}.parquet and JSON records without a `table` field."""
    tables = [_rows(0, 3, 1), pd.concat([_rows(0, 3, 1), _rows(0, 2, 2)], ignore_index=True)]
    for i, (part, t) in enumerate(zip(["r1", "r2"], tables, strict=True)):
        d = root / "p" / "training_set" / part
        (d / "data").mkdir(parents=True)
        (d / "versions").mkdir()
        version = f"legacy{i:014d}"
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), d / "data" / f"{version}.parquet")
        record = {"pipeline": "p", "asset": "training_set", "partition": part, "version": version,
                  "rows": len(t), "written_at": 1.0 + i, "meta": {"note": "old"}}  # fmt: skip
        (d / "versions" / f"{i:020d}-{version}.json").write_text(json.dumps(record))
    return tables


def test_store_of_the_earlier_layout_is_read_as_is_then_migrated(tmp_path):
    root = tmp_path / "store"
    tables = _legacy_store(root)
    store = Store(str(root))
    pd.testing.assert_frame_equal(store.read("p", "training_set", "r2"), tables[1])
    assert store.data_file("p", "training_set", "r1").endswith("legacy00000000000000.parquet")
    report = migrate_store(store)
    assert report.versions == 2 and report.tables == 1
    recs = [store.latest("p", "training_set", p) for p in ("r1", "r2")]
    assert [r.version for r in recs] == ["legacy00000000000000", "legacy00000000000001"]  # data versions kept
    assert all(r.delta_version is not None for r in recs) and recs[1].meta == {"note": "old"}
    for rec, t in zip(recs, tables, strict=True):
        pd.testing.assert_frame_equal(store.read_record(rec), t)
    assert migrate_store(store).versions == 0  # migrating again finds nothing to move
    # A migrated version is a base like any other: appending to it writes only the new rows.
    r3 = store.append("p", "training_set", _rows(0, 1, 3), base=recs[1], partition="r3")
    assert len(r3.table["files"]) == len(recs[1].table["files"]) + 1


def test_cli_migrate_store(tmp_path):
    root = tmp_path / "store"
    _legacy_store(root)
    done = subprocess.run(
        [sys.executable, "-m", "synthflow.cli", "migrate-store", str(root)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 versions of 1 tables" in done.stdout, done.stdout
    assert Store(str(root)).latest("p", "training_set", "r2").delta_version is not None


# DuckDB without synthflow: replay the Delta log up to a version (add actions not removed later), then read those
# Parquet files. DuckDB's own `delta` extension does the same when it can be installed (it needs a download).
_DUCKDB_SCRIPT = """
import json, sys
import duckdb
uri, version = sys.argv[1], int(sys.argv[2])
files = duckdb.sql(f'''
    WITH log AS (
        SELECT CAST(regexp_extract(filename, '(\\\\d+)\\\\.json$', 1) AS BIGINT) AS v, "add", "remove"
        FROM read_json('{uri}/_delta_log/*.json', filename = true, format = 'newline_delimited',
                       union_by_name = true)
    ),
    adds AS (SELECT v, "add".path AS path FROM log WHERE "add" IS NOT NULL AND v <= {version}),
    removes AS (SELECT v, "remove".path AS path FROM log WHERE "remove" IS NOT NULL AND v <= {version})
    SELECT DISTINCT path FROM adds a
    WHERE NOT EXISTS (SELECT 1 FROM removes r WHERE r.path = a.path AND r.v > a.v)
''').fetchall()
paths = [f"{uri}/{p}" for (p,) in files]
rows = duckdb.sql(f"SELECT _id, _round FROM read_parquet({paths!r}) ORDER BY _id").fetchall()
assert "synthflow" not in sys.modules
print(json.dumps({"rows": rows, "files": sorted(p for (p,) in files)}))
"""


def test_duckdb_reads_any_rounds_training_set_without_synthflow(tmp_path):
    store = Store(str(tmp_path / "store"))
    recs = [store.write("p", "training_set", _rows(0, 50, 1), partition="r1")]
    for r in range(2, 5):
        recs.append(store.append("p", "training_set", _rows(0, 10, r), base=recs[-1], partition=f"r{r}"))
    recs.append(store.append("p", "training_set", _rows(50, 7, 3), base=recs[1], partition="r3"))  # a rerun
    uri = store.table_uri("p", "training_set")
    for rec in recs:
        done = subprocess.run(
            [sys.executable, "-I", "-c", textwrap.dedent(_DUCKDB_SCRIPT), uri, str(rec.delta_version)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert got["files"] == sorted(rec.table["files"])
        want = store.read_record(rec).sort_values("_id")
        assert [tuple(r) for r in got["rows"]] == list(zip(want["_id"], want["_round"], strict=True))


def test_polars_reads_a_rounds_training_set_by_delta_version(tmp_path):
    pl = pytest.importorskip("polars")
    store = Store(str(tmp_path / "store"))
    r1 = store.write("p", "training_set", _rows(0, 5, 1), partition="r1")
    r2 = store.append("p", "training_set", _rows(0, 3, 2), base=r1, partition="r2")
    uri = store.table_uri("p", "training_set")
    assert pl.read_delta(uri, version=r1.delta_version).height == 5
    assert pl.read_delta(uri, version=r2.delta_version).height == 8


_WRITER = """
import sys
import pandas as pd
from synthflow.store import Store
store, who = Store(sys.argv[1]), sys.argv[2]
for i in range(6):
    part = f"{who}{i}"
    store.write("p", "real", pd.DataFrame({"_id": [f"{part}-{j}" for j in range(50)], "who": who}), partition=part)
"""


def test_two_processes_writing_partitions_of_one_asset_at_once_keep_every_version_right(tmp_path):
    root = str(tmp_path / "store")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, root, who], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]  # fmt: skip
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    store = Store(root)
    uri = store.table_uri("p", "real")
    for who in ("a", "b"):
        for i in range(6):
            rec = store.latest("p", "real", f"{who}{i}")
            ids = [f"{who}{i}-{j}" for j in range(50)]
            assert store.read_record(rec)["_id"].tolist() == ids
            assert sorted(DeltaTable(uri, version=rec.delta_version).to_pyarrow_table().column("_id").to_pylist()) \
                == sorted(ids)  # fmt: skip


def test_a_chunked_table_keeps_its_row_order(tmp_path):
    """delta-rs writes the record batches of a chunked table in any order; rows must come back as written.

    Arrow-backed pandas columns (what a table read back from the store holds) keep their chunks, so a training
    set built from r-1's rows reached delta-rs in many batches and was stored shuffled now and then."""
    import pandas as pd
    import pyarrow as pa

    from synthflow.store import Store

    store = Store(str(tmp_path / "store"))
    n = 64 * 50
    chunked = pa.chunked_array([pa.array(range(k * 50, (k + 1) * 50)) for k in range(64)])
    df = pd.DataFrame({"i": pd.arrays.ArrowExtensionArray(chunked)})
    assert pa.Table.from_pandas(df).column("i").num_chunks == 64
    for attempt in range(5):
        rec = store.write("p", f"t{attempt}", df)
        assert store.read_record(rec)["i"].tolist() == list(range(n)), attempt
        grown = store.append("p", f"t{attempt}", df.iloc[:10], base=rec)
        assert store.read_record(grown)["i"].tolist() == [*range(n), *range(10)], attempt
