"""The `synthflow` command line: validate, run, preview, versions, export, ui, smoke-model, migrate-store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from synthflow.profiles import Profile, find_project_root, state_dir
from synthflow.spec import PipelineSpec, SpecError, load_spec


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """synthflow: synthetic LLM-training data as Dagster assets.

    \b
    Examples:
      synthflow validate assets/*.yaml
      synthflow run assets/math_word_problems.yaml --rounds 2
      synthflow preview assets/math_word_problems.yaml -n 5
      synthflow versions assets/math_word_problems.yaml training_set
      synthflow export assets/math_word_problems.yaml --to ./exports/math
      synthflow ui
    """


def _project_root(spec_path: str, given: str | None) -> Path:
    """--project-root, else the nearest folder above the spec with resources/, else the working folder.

    The state folder (store, Dagster instance) follows it unless SYNTHFLOW_HOME says otherwise, so a command run
    from another folder uses the same instance and store as one run in the project.
    """
    root = Path(given).resolve() if given else find_project_root(Path(spec_path).parent)
    os.environ.setdefault("SYNTHFLOW_HOME", str(root / ".synthflow"))
    return root


project_root_option = click.option(
    "--project-root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder with resources/ and .synthflow/ (default: the nearest one above the spec, else here).",
)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--data/--no-data",
    default=True,
    show_default=True,
    help="Also open each seed and check its rows against the declared columns, as the blocking check does.",
)
def validate(specs: tuple[str, ...], data: bool) -> None:
    """Check pipeline specs; print each problem as FILE:LINE: FIELD: MESSAGE.

    With --data (the default) the seed is read too; a row that breaks the schema is printed as
    SOURCE: row N, column 'C': CHECK, with rows numbered from 1 as in the Dagster check.

    \b
    Example:
      synthflow validate assets/math_word_problems.yaml
      synthflow validate --no-data assets/*.yaml
    """
    bad = 0
    for path in specs:
        try:
            spec = load_spec(path)
        except SpecError as e:
            bad += 1
            click.echo(str(e), err=True)
            continue
        rows, problems = _seed_problems(spec) if data else (0, [])
        if problems:
            bad += 1
            click.echo("\n".join(problems), err=True)
            continue
        seed = f", seed ok: {rows} rows" if data else ""
        click.echo(
            f"{path}: ok ({spec.name}: {len(spec.seed.columns)} seed columns, {len(spec.verify)} verifiers{seed})"
        )
    sys.exit(1 if bad else 0)


def _seed_problems(spec: PipelineSpec, limit: int = 20) -> tuple[int, list[str]]:
    """The seed's row count and its load error or the rows that break the schema (what the seed asset blocks on)."""
    from synthflow.stages.schema import column_failures, describe_failure
    from synthflow.stages.seed import SeedLoadError, load_seed

    try:
        df = load_seed(spec.seed, spec.base_dir)
    except SeedLoadError as e:
        return 0, [f"seed of {spec.name}: {e}"]
    failures = column_failures(df, spec.seed.columns)
    out = [f"{spec.seed.source}: {describe_failure(f)}" for f in failures[:limit]]
    if len(failures) > limit:
        out.append(f"{spec.seed.source}: ... and {len(failures) - limit} more")
    return len(df), out


def _use_local_dagster_home() -> Path:
    from synthflow.dagster.instance import MARKER, prepare_instance, write_instance_yaml

    home = Path(os.environ.get("DAGSTER_HOME") or state_dir() / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    # SQLite storage in this folder, run monitoring on, telemetry off, one run per round partition at a time.
    ours = write_instance_yaml(home).read_text().startswith(MARKER)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    if ours:  # only in synthflow's own instance: a user's may hold runs of other machines
        for run_id in prepare_instance(home):
            click.echo(f"synthflow: run {run_id} was left STARTED by a killed process; marked it failed", err=True)
    return home


@main.command()
@click.argument("spec_path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--rounds",
    "-n",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many new rounds to materialize, in order (at most the round partitions that exist up to now).",
)
@click.option(
    "--profile",
    "-p",
    default=None,
    help="Resource profile in resources/ (default: $SYNTHFLOW_PROFILE or local).",
)
@project_root_option
def run(spec_path: str, rounds: int, profile: str | None, project_root: str | None) -> None:
    """Materialize the next N rounds of a pipeline through a real Dagster instance.

    The instance lives in DAGSTER_HOME (default .synthflow/dagster), so `synthflow ui` shows the runs afterwards.

    \b
    Example:
      synthflow run assets/math_word_problems.yaml --rounds 2 --profile local
    """
    from synthflow.dagster.runner import RoundFailed, SeedRejected, run_rounds
    from synthflow.store import StoreError

    root = _project_root(spec_path, project_root)
    spec = _spec_or_exit(spec_path)
    prof = _profile_or_exit(profile, root)
    home = _use_local_dagster_home()
    click.echo(f"synthflow: {spec.name}: {rounds} round(s); Dagster instance in {home}")
    try:
        summaries = run_rounds(spec, rounds, profile=prof.name, project_root=root, echo=click.echo)
    except (SeedRejected, RoundFailed, StoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    from synthflow.dagster.runner import format_summary

    click.echo(format_summary(summaries))
    if summaries:
        from synthflow.run_report import accepted_rows_report
        from synthflow.store import Store

        store = Store(prof.store_root())
        click.echo("")
        click.echo(accepted_rows_report(store, spec.name, spec, summaries[-1].partition))


@main.command()
@click.argument("spec_path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-n", "rows", default=5, show_default=True, type=click.IntRange(min=1), help="Accepted rows to aim for."
)
@click.option("--profile", "-p", default=None, help="Resource profile in resources/ (default: $SYNTHFLOW_PROFILE or local).")
@project_root_option
def preview(spec_path: str, rows: int, profile: str | None, project_root: str | None) -> None:
    """Generate and verify a few rows without materializing anything, print each with every verifier's verdict,
    and estimate a full round (candidates, requests, tokens, time, cost) from the measured rates.

    Nothing is written: no store table, no cache, no Dagster run.

    \b
    Example:
      synthflow preview assets/support_questions.yaml -n 5 --profile local
    """
    from synthflow.dagster.resources import EmbedderResource, GeneratorResource
    from synthflow.stages.preview import PreviewError, format_preview, run_preview
    from synthflow.stages.seed import SeedLoadError
    from synthflow.stages.session import pipeline_needs

    root = _project_root(spec_path, project_root)
    spec = _spec_or_exit(spec_path)
    prof = _profile_or_exit(profile, root)
    needs = pipeline_needs(spec)
    missing = [g for g in needs.generators if g not in prof.generators]
    missing += [e for e in needs.embedders if e not in prof.embedders]
    if missing:
        click.echo(f"error: {spec.name} needs {missing}, which the profile {prof.name!r} does not have", err=True)
        sys.exit(2)
    resources = {g: GeneratorResource.from_profile(prof.generators[g]) for g in needs.generators}
    embedder = EmbedderResource.from_profile(prof.embedders[needs.embedders[0]], None) if needs.embedders else None
    click.echo(f"synthflow: previewing {spec.name} ({rows} rows) with profile {prof.name!r}; nothing is stored")
    try:
        result = run_preview(
            spec,
            generators={g: res.get for g, res in resources.items()},
            embedder=embedder.get if embedder is not None else None,
            prices={g: prof.generators[g].price for g in needs.generators},
            n=rows,
        )
    except (PreviewError, SeedLoadError) as e:
        click.echo(f"error: seed of {spec.name}: {e}", err=True)
        sys.exit(1)
    finally:
        for res in resources.values():
            res.teardown_after_execution(None)
    click.echo(format_preview(result, [v.label for v in spec.verify], spec.output_columns))


@main.command()
@click.argument("spec_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("asset")
@click.option("--partition", default=None, help="Round partition key (default: every partition).")
@click.option("--profile", "-p", default=None)
@click.option(
    "--key-prefix",
    default=None,
    help="Asset key prefix the pipeline was built with (build_pipeline_defs key_prefix), slash-separated.",
)
@project_root_option
def versions(
    spec_path: str,
    asset: str,
    partition: str | None,
    profile: str | None,
    key_prefix: str | None,
    project_root: str | None,
) -> None:
    """List the stored versions of one asset of a pipeline (oldest first); `delta` is the version of the asset's
    Delta table that holds it (read it with any Delta reader); `blocked` names the blocking checks a version failed
    (no round or downstream asset reads it).

    \b
    Examples:
      synthflow versions assets/math_word_problems.yaml training_set
      synthflow versions assets/math_word_problems.yaml training_set --key-prefix synthetic
    """
    from synthflow.stages.session import failed_checks
    from synthflow.store import Store

    root = _project_root(spec_path, project_root)
    spec = _spec_or_exit(spec_path)
    store = Store(_profile_or_exit(profile, root).store_root())
    name = "__".join([*_prefix(key_prefix), spec.name])
    parts = [partition] if partition else store.partitions(name, asset)
    if not parts:
        click.echo(f"{name}/{asset}: no versions in {store.root}")
        sys.exit(1)
    # delta: the version of the asset's Delta table (store.table_uri) holding this version; "-" for the old layout.
    click.echo(f"{'partition':<16} {'version':<22} {'rows':>7} {'delta':>6}  {'written':<20}  blocked")
    for p in parts:
        for rec in store.versions(name, asset, p):
            blocked = ", ".join(failed_checks(rec)) or "-"
            delta = "-" if rec.delta_version is None else str(rec.delta_version)
            click.echo(
                f"{rec.partition:<16} {rec.version:<22} {rec.rows:>7} {delta:>6}  {rec.written_at_iso:<20}  "
                f"{blocked}"
            )


def _spec_or_exit(spec_path: str) -> PipelineSpec:
    try:
        return load_spec(spec_path)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def _profile_or_exit(profile: str | None, root: Path) -> Profile:
    from synthflow.profiles import ProfileError, load_profile

    try:
        return load_profile(profile, root)
    except ProfileError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _prefix(key_prefix: str | None) -> list[str]:
    return [p for p in (key_prefix or "").split("/") if p]


@main.command()
@click.argument("spec_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to", default=None, help="fsspec URL to write to (default: export.url of the spec).")
@click.option("--partition", default=None, help="Round partition to export (default: the latest round).")
@click.option("--profile", "-p", default=None, help="Resource profile whose store holds the training sets.")
@click.option(
    "--key-prefix",
    default=None,
    help="Asset key prefix the pipeline was built with (build_pipeline_defs key_prefix), slash-separated.",
)
@project_root_option
def export(
    spec_path: str,
    to: str | None,
    partition: str | None,
    profile: str | None,
    key_prefix: str | None,
    project_root: str | None,
) -> None:
    """Export a round's training set with its dataset card, through the Dagster instance.

    Without --to the spec's `export:` section says where (a URL, or hub_repo with the token in HF_TOKEN).
    A URL ending in .parquet gets one Parquet file; any other URL a Hugging Face dataset (save_to_disk) and
    README.md.

    \b
    Examples:
      synthflow export assets/math_word_problems.yaml
      synthflow export assets/math_word_problems.yaml --to ./exports/math
      synthflow export assets/math_word_problems.yaml --to s3://bucket/math.parquet --partition 2026-01-02
    """
    from synthflow.dagster.export import run_export
    from synthflow.stages.export import ExportError

    root = _project_root(spec_path, project_root)
    spec = _spec_or_exit(spec_path)
    prof = _profile_or_exit(profile, root)
    _use_local_dagster_home()
    try:
        done = run_export(
            spec, to=to, partition=partition, profile=prof.name, project_root=root, key_prefix=_prefix(key_prefix)
        )
    except ExportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"exported round {done.round} ({done.partition}) of {spec.name}: {done.rows} rows to "
        f"{done.location}; card at {done.card_location}"
    )


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--profile", "-p", default=None, help="Resource profile (default: $SYNTHFLOW_PROFILE or local)."
)
def ui(port: int, host: str, profile: str | None) -> None:
    """Open the Dagster UI (dagster dev) on definitions.py with the local instance in .synthflow/dagster.

    Runs started with `synthflow run` show up there; schedules (one per pipeline, stopped until you turn it
    on) and automation are under Automation. Run it in the project folder (where definitions.py is).

    \b
    Examples:
      synthflow ui
      synthflow ui --port 3001 --profile smoke
    """
    if not Path("definitions.py").exists():
        click.echo("error: no definitions.py here; run `synthflow ui` in the project folder", err=True)
        sys.exit(2)
    _use_local_dagster_home()
    if profile:
        os.environ["SYNTHFLOW_PROFILE"] = profile
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "dagster", "dev", "-f", "definitions.py", "-h", host, "-p", str(port)],
    )


@main.command("migrate-store")
@click.argument("root")
@click.option("--verbose", "-v", is_flag=True, help="Print each version as it moves.")
def migrate_store(root: str, verbose: bool) -> None:
    """Move a store of the earlier layout (data/<hash>.parquet) into Delta tables, keeping every version.

    ROOT is the store's URL (a folder, file://, s3://, ...). Version strings stay the same, so Dagster data
    versions do not change; the old Parquet files are left in place. Running it again moves nothing.
    """
    from synthflow.store import Store, StoreError
    from synthflow.store import migrate_store as migrate

    try:
        report = migrate(Store(root), log=click.echo if verbose else None)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"moved {report.versions} versions of {report.tables} tables into Delta tables under {root}")


@main.command("smoke-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
def smoke_model(out_dir: str) -> None:
    """Build the smoke model (tiny random-weight Llama with a BPE tokenizer) into OUT_DIR.

    It writes random text; it exists to test plumbing (transformers and vLLM load it) without downloads.

    \b
    Example:
      synthflow smoke-model .synthflow/smoke-model
    """
    from synthflow.generators.smoke_model import build_smoke_model

    path = build_smoke_model(out_dir)
    click.echo(json.dumps({"smoke_model": str(path)}))


if __name__ == "__main__":
    main()
