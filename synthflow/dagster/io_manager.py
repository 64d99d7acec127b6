"""The IO manager synthflow attaches to its own assets, so a host asset takes them as plain inputs.

synthflow's assets write through the store and return MaterializeResult, so Dagster never calls `handle_output`;
this manager only loads. It sits under the profile's own key (`synthflow_<profile>_io`), never `io_manager`, so it
claims nothing of the host code location. A round-partitioned downstream asset gets its round's table; an
unpartitioned one gets the latest round whose training set passed its blocking checks (never a dict of rounds).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from synthflow.dagster.translator import STORE_NAME_META, TABLE_META
from synthflow.stages.session import RoundInputError, latest_passing_partition, passing_record, read_passing
from synthflow.store import Store

ROUND_TABLES = ("candidates", "verified", "coverage", "training_set")


def store_location(context: dg.InputContext) -> tuple[str, str]:
    """(store name, table) from the upstream asset's metadata, which a translator cannot change; the default key
    [*prefix, pipeline, table] says the same for an asset built without it."""
    meta = context.upstream_output.definition_metadata if context.upstream_output is not None else {}
    name, table = meta.get(STORE_NAME_META), meta.get(TABLE_META)
    if name is not None and table is not None:
        return str(getattr(name, "value", name)), str(getattr(table, "value", table))
    return "__".join(context.asset_key.path[:-1]), context.asset_key.path[-1]


class SynthflowIOManager(dg.ConfigurableIOManager):
    """Reads synthflow tables from the store at `root` as pandas DataFrames."""

    root: str

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is not None:  # synthflow assets return MaterializeResult; anything else is a wiring mistake
            raise TypeError(f"{context.asset_key.to_user_string()} is written through the synthflow store")

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        key = context.asset_key
        store = Store(self.root)
        name, table = store_location(context)
        where = key.to_user_string()
        try:
            if table not in ROUND_TABLES:
                return read_passing(store, name, table, None, where)
            if context.has_partition_key and len(context.asset_partition_keys) == 1:
                part = context.asset_partition_keys[0]
                # The round's training set decides whether any of the round's tables may be read.
                passing_record(store, name, "training_set", part, f"{where} [{part}]")
                return store.read(name, table, part)
            part = latest_passing_partition(store, name, store.partitions(name, "training_set"))
            if part is None:
                raise RoundInputError(f"{where}: no round has a training set that passed its blocking checks")
            context.log.info(f"{where}: reading the latest round, {part}")
            return store.read(name, table, part)
        except RoundInputError as e:
            raise dg.Failure(description=str(e)) from None
