"""The column DAG of `generate.columns`: one module per column type, `dag` fills them in order (docs/columns.md)."""
