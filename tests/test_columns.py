"""generate.columns: the column DAG (issue 13). Spec errors with file, line and field; seeded samplers; llm columns
through the request cache (resume column by column); n per prompt; reasoning capture; two rounds through Dagster on
the smoke profile and on the default CPU model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synthflow.generators.base import GenerationRequest, GenerationResult
from synthflow.spec import SpecError, load_spec, parse_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.round import RoundInputs, run_round
from synthflow.stages.seed import load_seed
from synthflow.store import Store

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "persona_math_columns.yaml"

SEED = """name: cols
seed:
  source: {source}
  id_column: id
  text: question
  columns:
    - {{name: id, type: string}}
    - {{name: topic, type: string}}
    - {{name: question, type: string}}
diversity: {{enabled: false}}
verify: [{{type: schema}}]
generate:
  rows_per_round: 4
  candidate_budget: 12
  sampling: {{max_tokens: 40, seed: 3}}
  columns:
"""


def spec_text(columns: str, source: str | None = None) -> str:
    src = source or str(REPO / "assets" / "data" / "math_word_problems.jsonl")
    return SEED.format(source=src) + columns


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(SpecError) as e:
        parse_spec(text, "cols.yaml")
    return e.value.problems


# -- the spec ------------------------------------------------------------------------------------------------------


def test_example_validates_and_derives_the_row_schema():
    spec = load_spec(REPO / "assets" / EXAMPLE)
    props = spec.generate.output_schema["properties"]
    assert list(props) == [
        "topic",
        "level",
        "audience",
        "question.text",
        "answer",
        "answer__reasoning",
        "label",
    ]
    assert props["topic"]["enum"] == ["arithmetic", "geometry", "rates"]
    assert "answer__reasoning" not in spec.generate.output_schema["required"]
    assert spec.generate.generators_used == ["generator", "judge"]


def test_single_step_form_is_still_shorthand():
    spec = load_spec(REPO / "assets" / "math_word_problems.yaml")
    assert spec.generate.columns is None and spec.output_columns == ["question", "solution", "answer"]
    anchor = "seed: 3}\n  columns:\n"
    no_schema = spec_text("").replace(anchor, "seed: 3}\n  prompt: hi\n")
    assert [(f, m) for _, f, m in problems(no_schema)] == [("generate.output_schema", "Field required")]
    both = spec_text("    - {name: a, type: expression, template: x}\n").replace(
        anchor, "seed: 3}\n  prompt: hi\n  columns:\n"
    )
    [(line, field, msg)] = problems(both)
    assert field == "generate.prompt" and "llm column" in msg and line == 16


def test_unknown_name_gives_file_line_and_field():
    text = spec_text(
        "    - {name: topic, type: category, values: [a, b]}\n"
        "    - name: question\n"
        "      type: llm\n"
        "      prompt: |\n"
        "        About {{ topic }}\n"
        "        for {{ audiance }}\n"
    )
    [(line, field, msg)] = problems(text)
    assert field == "generate.columns[1].prompt"
    assert "'audiance'" in msg and "not a column" in msg and "'topic'" in msg
    assert text.splitlines()[line - 1].strip() == "for {{ audiance }}"


def test_cycle_and_missing_field_and_bad_keys():
    cyc = problems(
        spec_text(
            "    - {name: a, type: expression, template: '{{ b }}'}\n"
            "    - {name: b, type: expression, template: '{{ a }}!'}\n"
            "    - {name: question, type: expression, template: x}\n"
        )
    )
    assert [(f, m) for _, f, m in cyc] == [
        ("generate.columns[0].name", "columns depend on each other in a cycle: a -> b -> a")
    ]
    assert cyc[0][0] == 17  # the line of column a
    bad = problems(
        spec_text(
            "    - {name: q, type: llm, prompt: hi, output_schema: {type: object, properties: {text: {type: string}}}}\n"
            "    - {name: a, type: llm, prompt: '{{ q.txt }}', temperatur: 1}\n"
            "    - {name: c, type: categroy, values: [x]}\n"
            "    - {name: d, type: subcategory, category: nope, values: {x: [y]}}\n"
        )
    )
    by_field = {f: (line, m) for line, f, m in bad}
    assert by_field["generate.columns[1].temperatur"][1].startswith("unknown key")
    assert by_field["generate.columns[1].temperatur"][0] == 18
    assert "unknown column type 'categroy'" in by_field["generate.columns[2].type"][1]
    assert "llm" in by_field["generate.columns[2].type"][1]  # the known types are listed


def test_field_reference_and_subcategory_parent_are_checked():
    bad = problems(
        spec_text(
            "    - {name: q, type: llm, prompt: hi, output_schema: {type: object, properties: {text: {type: string}}}}\n"
            "    - {name: a, type: llm, prompt: '{{ q.txt }}'}\n"
            "    - {name: d, type: subcategory, category: nope, values: {x: [y]}}\n"
        )
    )
    msgs = {f: m for _, f, m in bad}
    assert "q.txt" in msgs["generate.columns[1].prompt"] and "'text'" in msgs["generate.columns[1].prompt"]
    assert "reads column 'nope'" in msgs["generate.columns[2]"]


# -- samplers ------------------------------------------------------------------------------------------------------

SAMPLERS = (
    "    - {name: topic, type: category, values: {arithmetic: 3, geometry: 1}}\n"
    "    - name: sub\n"
    "      type: subcategory\n"
    "      category: topic\n"
    "      values: {arithmetic: [add, subtract], geometry: {area: 1, perimeter: 0}}\n"
    "    - {name: x, type: uniform, low: 2, high: 5, integer: true}\n"
    "    - {name: y, type: normal, mean: 10, stddev: 2, min: 9, max: 11}\n"
    "    - {name: who, type: sample, source: PERSONAS, column: persona}\n"
    "    - {name: tag, type: expression, template: '{{ topic }}-{{ sub }}-{{ x }}'}\n"
    "    - {name: question, type: expression, template: '{{ who }} asks about {{ tag }}'}\n"
)


def _sampler_rows(spec, round_index: int, n: int, first: int = 0) -> pd.DataFrame:
    from synthflow.stages.columns.dag import run_column_batch

    seed = load_seed(spec.seed, spec.base_dir)
    plan = [(-1, seed.iloc[:1])] * n
    frame, _ = run_column_batch(
        spec, plan, round_index=round_index, first_index=first, cache=None, generator_for=None, stats={}
    )
    return frame


def test_samplers_are_seeded_by_round_and_row_and_follow_their_weights(tmp_path):
    import fsspec

    with fsspec.open("memory://personas/p.jsonl", "w") as f:  # any fsspec URL: the memory filesystem is real
        f.write("\n".join(json.dumps({"persona": f"p{i}"}) for i in range(5)))
    spec = parse_spec(
        spec_text(SAMPLERS.replace("PERSONAS", "memory://personas/p.jsonl")), str(tmp_path / "s.yaml")
    )
    a = _sampler_rows(spec, 1, 400)
    again = _sampler_rows(spec, 1, 400)
    cols = ["topic", "sub", "x", "y", "who", "tag"]
    pd.testing.assert_frame_equal(a[cols], again[cols])  # a resumed round draws the same
    tail = _sampler_rows(spec, 1, 100, first=300)  # a row's draw depends on its index, not on its batch
    pd.testing.assert_frame_equal(
        tail[cols].reset_index(drop=True), a[cols].iloc[300:].reset_index(drop=True)
    )
    assert not a[cols].equals(_sampler_rows(spec, 2, 400)[cols])  # another round draws anew
    share = (a["topic"] == "arithmetic").mean()
    assert 0.68 < share < 0.82, share  # weight 3:1
    assert set(a.loc[a.topic == "arithmetic", "sub"]) == {"add", "subtract"}
    assert set(a.loc[a.topic == "geometry", "sub"]) == {"area"}  # weight 0 is never drawn
    assert set(a["x"]) == {2, 3, 4, 5} and a["y"].between(9, 11).all()
    assert set(a["who"]) == {f"p{i}" for i in range(5)}
    assert (a["tag"] == a["topic"] + "-" + a["sub"] + "-" + a["x"].astype(str)).all()
    assert a["parse_error"].isna().all()


# -- llm columns ---------------------------------------------------------------------------------------------------


class ThinkingDouble:
    """A generator double: answers `<think>...</think>` then the answer, which no real CPU model does on demand."""

    model_id = "double-thinker"
    label = "double"

    def __init__(self) -> None:
        self.sent = 0

    def generate(self, requests: Iterable[GenerationRequest], progress=None) -> Iterator:
        for r in requests:
            self.sent += 1
            text = f"<think>step one, step two for {r.sample_index}</think>answer {r.sample_index} to {r.messages[-1][1][-12:]}"
            yield r, GenerationResult(r.key(self.model_id), text, self.model_id, 5, 20, "stop")

    def close(self) -> None:
        pass


LLM_COLUMNS = (
    "    - {name: topic, type: category, values: [arithmetic, geometry]}\n"
    "    - name: question\n"
    "      type: llm\n"
    "      prompt: 'Write a {{ topic }} problem. {% for ex in exemplars %}{{ ex.question }}{% endfor %}'\n"
    "      output_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n"
    "    - name: answer\n"
    "      type: llm\n"
    "      generator: judge\n"
    "      prompt: 'Solve: {{ question.text }}'\n"
    "      reasoning: true\n"
    "      n: 2\n"
    "    - {name: label, type: expression, template: '{{ topic }}/{{ answer }}'}\n"
)


def _round(spec, store: Store, generator, judge, round_index: int = 1):
    seed = load_seed(spec.seed, spec.base_dir)
    real = real_rows(seed, [c.name for c in spec.seed.columns], 0)
    return run_round(
        RoundInputs(
            spec=spec,
            round_index=round_index,
            seed=seed,
            real=real,
            previous=None,
            generator=generator,
            cache=ResultCache(store, spec.name),
            generators={"judge": judge},
        )
    )


def test_llm_columns_fan_out_capture_reasoning_and_resume_from_the_cache(tmp_path, smoke_generator):
    spec = parse_spec(spec_text(LLM_COLUMNS), str(tmp_path / "s.yaml"))
    store = Store(str(tmp_path / "store"))
    judge = ThinkingDouble()
    out = _round(spec, store, smoke_generator, judge)
    v = out.verified
    assert out.stop_reason == "target reached" and len(out.accepted) == 4
    # n: 2 -> two rows per problem, each naming its parent, sample indexes 0 and 1
    assert len(v) == 4 and v["parent_id"].notna().all() and v["parent_id"].nunique() == 2
    assert sorted(v["sample_index"]) == [0, 0, 1, 1] and v["candidate_id"].is_unique
    assert (v.groupby("parent_id")["question.text"].nunique() == 1).all()  # the answers share their question
    # reasoning: its own column, out of the answer, of _output (what verifiers judge) and of the text
    assert v["answer"].str.startswith("answer ").all() and not v["answer"].str.contains("think").any()
    assert v["answer__reasoning"].str.startswith("step one").all()
    assert (v["label"] == v["topic"] + "/" + v["answer"]).all()
    prov = json.loads(v["column_provenance"].iloc[0])
    assert prov["question"]["model"] == "synthflow-smoke" and prov["answer"]["model"] == "double-thinker"
    assert len(prov["question"]["prompt_hash"]) == 16
    assert set(v["model"]) == {"synthflow-smoke, double-thinker"}
    cols = out.coverage["columns"]
    assert (
        cols["question"]["requests"] == 2 and cols["answer"]["requests"] == 4 and cols["answer"]["rows"] == 4
    )
    assert cols["answer"]["reasoning_tokens"] > 0 and cols["answer"]["completion_tokens"] == 80
    # The double reports no reasoning figure (nor n: it gets one seeded request per sample): estimated, and said so
    assert cols["answer"]["reasoning_tokens_source"] == "estimated" and cols["answer"]["server_requests"] == 4
    assert cols["topic"] == {"type": "category", "rows": 2, "failures": 0}
    shares = out.coverage["sampler_shares"]["topic"]
    assert shares["rows"] == 4 and {s["weight"] for s in shares["values"].values()} == {0.5}
    from synthflow.stages.session import coverage_checks

    assert coverage_checks(spec, out.coverage) == []  # no column asks for the gate
    gated = parse_spec(
        spec_text(
            LLM_COLUMNS.replace(
                "values: [arithmetic, geometry]}",
                "values: [arithmetic, geometry], max_share_deviation: 0.01}",
            )
        ),
        str(tmp_path / "g.yaml"),
    )
    [check] = coverage_checks(gated, out.coverage)
    assert check.name == "sampler_shares" and not check.blocking
    assert check.passed == (shares["max_abs_deviation"] <= 0.01) and "topic" in check.metadata
    synth = out.training_set[out.training_set["_source"] == "synthetic"]
    assert {"question.text", "answer", "answer__reasoning", "label"} <= set(synth.columns)

    # A resumed round (a fresh cache object over the same store) sends nothing and fills the same rows.
    sent = judge.sent
    again = _round(spec, store, smoke_generator, judge)
    assert again.stats.sent == 0 and again.stats.from_cache == 6
    # generate.overlap may plan one batch ahead of the target (its rows discarded, results cached): at most that
    # one extra batch (1 prompt row x n=2) reaches the judge, none of the round's own rows.
    assert judge.sent - sent <= 2
    assert again.coverage["columns"]["answer"]["from_cache"] == 4
    pd.testing.assert_frame_equal(
        v[["candidate_id", "question.text", "answer"]],
        again.verified[["candidate_id", "question.text", "answer"]],
    )


def test_a_failing_column_rejects_only_its_rows(tmp_path, smoke_generator):
    class Failing(ThinkingDouble):
        def generate(self, requests, progress=None):
            for r in requests:
                err = "server_error: boom" if r.sample_index == 1 else None
                yield r, GenerationResult(r.key(self.model_id), "" if err else "ok", self.model_id, error=err)

    spec = parse_spec(spec_text(LLM_COLUMNS), str(tmp_path / "s.yaml"))
    out = _round(spec, Store(str(tmp_path / "store")), smoke_generator, Failing())
    v = out.verified
    bad = v[v["sample_index"] == 1]
    assert (~bad["accepted"]).all() and (bad["rejected_by"] == "parse").all()
    assert bad["reject_reason"].str.startswith("column answer: generation failed: server_error").all()
    # The other sample's rows pass; those past the round's quota are set aside, not failed.
    ok = v[v["sample_index"] == 0]
    assert ok["accepted"].any() and ok["rejected_by"][~ok["accepted"]].eq("quota").all()
    assert out.coverage["columns"]["answer"]["failures"] > 0
    assert (
        out.coverage["columns"]["label"]["rows"]
        == out.coverage["columns"]["answer"]["rows"] - out.coverage["columns"]["answer"]["failures"]
    )


# -- through Dagster -----------------------------------------------------------------------------------------------


def _example(project: Path, rows: int, budget: int) -> Path:
    path = project / "assets" / EXAMPLE
    text = path.read_text()
    for old, new in {
        "rows_per_round: 200": f"rows_per_round: {rows}",
        "candidate_budget: 600": f"candidate_budget: {budget}",
        "batch_size: 16": f"batch_size: {budget}",
    }.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return path


def _run_two_rounds(project: Path, profile: str, rows: int, budget: int, export_to: Path):
    """Two rounds of the example through a Dagster instance, then p/export of the last one."""
    from synthflow.dagster.export import run_export
    from synthflow.dagster.runner import run_rounds
    from synthflow.profiles import load_profile

    spec = load_spec(_example(project, rows, budget))
    store = Store(load_profile(profile, project).store_root())
    with dg.instance_for_test() as instance:
        summaries = run_rounds(
            spec, 2, profile=profile, project_root=project, instance=instance, echo=lambda m: None
        )
        exported = run_export(
            spec, to=str(export_to), profile=profile, project_root=project, instance=instance
        )
    return spec, store, summaries, exported


def test_example_runs_two_rounds_through_dagster_and_exports(project, smoke_model_dir, tmp_path):
    from synthflow.dagster.export import run_export

    spec, store, summaries, exported = _run_two_rounds(project, "smoke", 4, 8, tmp_path / "export")
    assert [s.round for s in summaries] == [1, 2]
    for s in summaries:
        cov = store.read(spec.name, "coverage", s.partition).iloc[0]
        cols = json.loads(cov["columns"])
        assert set(cols) == {"topic", "level", "audience", "question", "answer", "label"}
        assert cols["answer"]["rows"] == 2 * cols["question"]["rows"] - 2 * cols["question"]["failures"]
        assert "topic" in json.loads(cov["sampler_shares"])
    from synthflow import build_pipeline_defs

    defs = build_pipeline_defs(spec, profile="smoke", project_root=project)
    checks = {c.name for a in defs.assets if isinstance(a, dg.AssetsDefinition) for c in a.check_specs}
    assert "sampler_shares" in checks  # topic has max_share_deviation: a check on p/coverage
    last = store.read(spec.name, "training_set", summaries[-1].partition)
    synth = last[last["_source"] == "synthetic"]
    assert len(synth) == summaries[1].synthetic_rows > summaries[0].synthetic_rows > 0  # accumulated
    assert (
        synth["audience"]
        .isin(
            [json.loads(x)["persona"] for x in (REPO / "assets/data/personas.jsonl").read_text().splitlines()]
        )
        .all()
    )
    assert (synth["label"] == synth["topic"] + "/" + synth["level"]).all()

    import datasets

    ds = datasets.load_from_disk(exported.location)  # export.format: messages, TRL's SFT layout
    assert exported.round == 2 and len(ds) == len(synth) and ds.column_names == ["messages"]
    first = ds[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[1]["content"] in set(synth["question.text"]) and first[2]["content"] in set(synth["answer"])

    # Per-column provenance reaches the training set (read back from the store after Dagster wrote it): per llm
    # column its model and prompt hash, and the row each n: 2 answer was sampled from.
    for prov in synth["_column_provenance"].map(json.loads):
        assert set(prov) == {"question", "answer"}
        assert all(p["model"] == "synthflow-smoke" and len(p["prompt_hash"]) == 16 for p in prov.values())
        assert prov["answer"]["sample_index"] in (0, 1) and prov["question"]["sample_index"] == 0
    assert synth["_parent_id"].notna().all() and synth["_parent_id"].nunique() < len(synth)
    real = last[last["_source"] == "real"]
    assert real["_column_provenance"].isna().all() and real["_parent_id"].isna().all()

    # ... and the raw export, which keeps every column, through p/export as well.
    raw_spec = spec.model_copy(update={"export": spec.export.model_copy(update={"format": "raw", "url": None})})
    with dg.instance_for_test() as instance:
        raw = run_export(raw_spec, to=str(tmp_path / "raw"), profile="smoke", project_root=project, instance=instance)
    table = datasets.load_from_disk(raw.location).to_pandas()
    table = table[table["_source"] == "synthetic"].set_index("_id")
    assert {"_column_provenance", "_parent_id", "_model", "_prompt_hash"} <= set(table.columns)
    by_id = synth.set_index("_id")
    assert (table["_column_provenance"] == by_id.loc[table.index, "_column_provenance"]).all()


@pytest.mark.slow
def test_example_on_the_default_cpu_model_accepts_real_rows(project, tmp_path):
    spec, store, summaries, exported = _run_two_rounds(project, "local", 2, 4, tmp_path / "export")
    assert "smoke" not in summaries[0].generator, "the packaged SmolLM2 model must load"
    last = store.read(spec.name, "training_set", summaries[-1].partition)
    synth = last[last["_source"] == "synthetic"]
    assert len(synth) >= 2, "real model rows accepted"
    assert synth["question.text"].str.len().gt(10).all() and synth["answer"].str.len().gt(0).all()
    assert synth["_model"].str.contains("SmolLM2", case=False).all()
    for s in summaries:  # the figures of the run, for the record (pytest -s)
        cov = store.read(spec.name, "coverage", s.partition).iloc[0]
        print(
            f"round {s.round}: {s.candidates} candidates, {s.accepted} accepted, rejected_by {s.rejected_by}"
        )
        print("  columns:", cov["columns"])
        print("  sampler_shares:", cov["sampler_shares"])
    print(synth[["topic", "level", "audience", "question.text", "answer"]].to_string(max_colwidth=120))


def test_a_servers_reasoning_content_goes_to_the_reasoning_column(tmp_path, monkeypatch, smoke_generator):
    """An OpenAI-compatible server with a reasoning parser returns `reasoning_content` apart from the answer and
    counts reasoning tokens in usage.completion_tokens_details. No reasoning model runs on this machine, so a small
    stdlib HTTP server answers in that shape (the shape vLLM's server gives with --reasoning-parser)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from synthflow.generators.openai_backend import OpenAIGenerator

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            bodies.append(body)
            n = body["n"]
            answer = {
                "choices": [
                    {
                        "index": i,
                        "message": {
                            "content": f"42 ({body['seed']}.{i})",
                            "reasoning_content": "six times seven",
                        },
                        "finish_reason": "stop",
                    }
                    for i in reversed(range(n))  # any order: matched by index
                ],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": 9 * n,
                    "completion_tokens_details": {"reasoning_tokens": 5 * n},
                },
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "unused")
        judge = OpenAIGenerator("reasoner", max_concurrency=2, timeout_s=10, hung_after_s=0)
        spec = parse_spec(spec_text(LLM_COLUMNS), str(tmp_path / "s.yaml"))
        out = _round(spec, Store(str(tmp_path / "store")), smoke_generator, judge)
    finally:
        server.shutdown()
    v = out.verified
    assert v["accepted"].all()
    assert v["answer__reasoning"].eq("six times seven").all() and v["answer"].str.startswith("42 (").all()
    # n: 2 is ONE request per row with n=2 (the server's own n), each choice its own row naming the parent
    assert len(bodies) == 2 and all(b["n"] == 2 for b in bodies)
    assert v["answer"].nunique() == 4 and v.groupby("parent_id")["answer"].nunique().eq(2).all()
    cols = out.coverage["columns"]["answer"]
    assert cols["server_requests"] == 2 and cols["requests"] == 4
    # the server's reasoning figure, not an estimate, and labelled so
    assert cols["reasoning_tokens"] == 5 * 4 and cols["reasoning_tokens_source"] == "server"
    assert cols["completion_tokens"] == 9 * 4 and cols["prompt_tokens"] == 7 * 2  # the prompt counted once a request


def test_sample_keys_and_runs():
    """Server-side n changes how samples travel, not their cache keys: keys computed before it still hit."""
    from synthflow.generators.base import SamplingParams, sample_runs, sample_seed

    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    one = GenerationRequest((("system", "s"), ("user", "Write a problem.")), SamplingParams(max_tokens=40), 3, 0, schema)
    assert one.key("synthflow-smoke") == "c1521c2fc2a37ea188e502f8aac930c3"  # the key of a cache made before n
    two = GenerationRequest((("user", "Write a problem."),), SamplingParams(max_tokens=40), 3, 1)
    assert two.key("smoke") == "6d357e591947da314eb870094ed36b09"

    def req(prompt: str, i: int) -> GenerationRequest:
        return GenerationRequest((("user", prompt),), SamplingParams(), 7, i)

    # prompts interleaved, a gap at sample 2 of "a": runs a0-a1, b0-b2, a3
    runs = sample_runs([req("a", 0), req("b", 0), req("a", 1), req("b", 1), req("b", 2), req("a", 3)])
    assert [[(r.messages[0][1], r.sample_index) for r in run.requests] for run in runs] == [
        [("a", 0), ("a", 1)],
        [("a", 3)],
        [("b", 0), ("b", 1), ("b", 2)],
    ]
    # sample i has the server seed sample_seed(seed, 0) + i, in a full run or alone
    assert [run.seed for run in runs] == [sample_seed(7, 0), sample_seed(7, 0) + 3, sample_seed(7, 0)]


N_COLUMNS = (
    "    - {name: topic, type: category, values: [arithmetic, geometry]}\n"
    "    - name: question\n"
    "      type: llm\n"
    "      prompt: 'Write a {{ topic }} problem.'\n"
    "      n: 3\n"
)


@pytest.mark.vllm
@pytest.mark.slow
def test_n_is_the_servers_own_n_cached_per_sample(tmp_path, openai_env):
    """n: 3 against a real vLLM server through the openai backend: one request per row (counted by the server),
    three candidate rows naming their parent; a resumed round sends nothing; raising n sends only the missing
    samples, one request per row."""
    from synthflow.generators.openai_backend import OpenAIGenerator
    from tests.fixtures.vllm_server import SERVED_MODEL

    gen = OpenAIGenerator(SERVED_MODEL, max_concurrency=4, timeout_s=60)
    store = Store(str(tmp_path / "store"))
    spec = parse_spec(spec_text(N_COLUMNS), str(tmp_path / "s.yaml"))
    before = openai_env.chat_requests()
    out = _round(spec, store, gen, gen)
    v = out.verified
    parents = v["parent_id"].dropna().unique()
    assert len(parents) >= 2 and len(v) == 3 * len(parents)
    assert openai_env.chat_requests() - before == len(parents)  # one request with n=3 per row
    assert all(sorted(g) == [0, 1, 2] for _, g in v.groupby("parent_id")["sample_index"])
    assert v.groupby("parent_id")["question"].nunique().eq(3).all() and v["candidate_id"].is_unique
    cols = out.coverage["columns"]["question"]
    assert cols["requests"] == 3 * len(parents) and cols["server_requests"] == len(parents)

    # Resumed: every sample is cached under its own key, nothing reaches the server.
    before = openai_env.chat_requests()
    again = _round(spec, store, gen, gen)
    assert again.stats.sent == 0 and openai_env.chat_requests() - before == 0
    pd.testing.assert_frame_equal(v[["candidate_id", "question"]], again.verified[["candidate_id", "question"]])

    # n: 5 over the same cache: samples 0-2 of a row are hits; 3 and 4 go out as one request per row.
    wider = parse_spec(spec_text(N_COLUMNS.replace("n: 3", "n: 5")), str(tmp_path / "s5.yaml"))
    before = openai_env.chat_requests()
    more = _round(wider, store, gen, gen)
    w = more.verified
    wide_parents = w["parent_id"].dropna().unique()
    old = set(parents) & set(wide_parents)
    assert old and more.stats.from_cache == 3 * len(old)
    assert more.stats.sent == 5 * len(wide_parents) - 3 * len(old)
    assert openai_env.chat_requests() - before == len(wide_parents)
    assert w.groupby("parent_id")["question"].nunique().eq(5).all()


# -- conversation, preference, evolve --------------------------------------------------------------------------

MULTI_CALL = (
    "    - {name: topic, type: category, values: [billing, shipping]}\n"
    "    - name: question\n"
    "      type: llm\n"
    "      prompt: 'Ask about {{ topic }}.'\n"
    "      output_schema: {type: object, properties: {text: {type: string}}, required: [text]}\n"
    "    - {name: harder, type: evolve, source: question.text, operators: [deepen, concretize], steps: 2}\n"
    "    - name: dialogue\n"
    "      type: conversation\n"
    "      user: 'You are a customer asking: {{ harder }}'\n"
    "      assistant_system: You are a support agent.\n"
    "      assistant_generator: judge\n"
    "      turns: [1, 3]\n"
    "    - name: pair\n"
    "      type: preference\n"
    "      prompt: '{{ harder }}'\n"
    "      generator: [generator, judge]\n"
    "      k: 3\n"
    "      judge: judge\n"
    "      min_margin: 0\n"
)


def test_conversation_preference_and_evolve_columns(tmp_path, smoke_generator):
    spec = parse_spec(spec_text(MULTI_CALL), str(tmp_path / "s.yaml"))
    assert spec.generate.generators_used == ["generator", "judge"]
    store = Store(str(tmp_path / "store"))
    out = _round(spec, store, smoke_generator, smoke_generator)
    v = out.verified
    ok = v[v["accepted"]]
    assert len(ok) == 4, v[["reject_reason"]]
    # evolve: the rewrite beside its original, with the operators applied
    assert (ok["harder"] != ok["question.text"]).all()
    assert (
        ok["harder__operators"]
        .map(lambda s: len(s.split(",")) == 2 and set(s.split(",")) <= {"deepen", "concretize"})
        .all()
    )
    # conversation: [{role, content}] alternating user/assistant, 1-3 exchanges
    for d in ok["dialogue"]:
        roles = [m["role"] for m in d]
        assert (
            roles[0] == "user" and roles[1::2] == ["assistant"] * (len(roles) // 2) and 2 <= len(roles) <= 6
        )
    # preference: chosen scored at least as high as rejected, margin = difference
    assert (ok["pair.chosen_score"] >= ok["pair.rejected_score"]).all()
    assert (ok["pair.margin"] == ok["pair.chosen_score"] - ok["pair.rejected_score"]).all()
    assert (ok["pair.prompt"] == ok["harder"]).all()
    cols = out.coverage["columns"]
    assert cols["pair"]["requests"] == 3 * 2 * cols["pair"]["rows"]  # k responses and k judgements per row
    assert cols["harder"]["requests"] == 2 * cols["harder"]["rows"]  # two steps
    assert cols["dialogue"]["requests"] >= 2 * cols["dialogue"]["rows"]
    # Stored and read back: the dialogue is a list of {role, content} in Parquet.
    rec = store.write(spec.name, "training_set", out.training_set.infer_objects(), partition="p")
    back = store.read(spec.name, "training_set", "p", version=rec.version)
    d = back[back["_source"] == "synthetic"]["dialogue"].iloc[0]
    assert [set(m) for m in d] == [{"role", "content"}] * len(d)
    # Resumed: nothing sent again.
    again = _round(spec, store, smoke_generator, smoke_generator)
    assert again.stats.sent == 0


def test_a_tie_is_rejected_by_min_margin(tmp_path):
    class SameScore(ThinkingDouble):
        def generate(self, requests, progress=None):
            for r in requests:
                text = '{"score": 5}' if r.json_schema else "an answer"
                yield r, GenerationResult(r.key(self.model_id), text, self.model_id)

    spec = parse_spec(
        spec_text(
            "    - {name: q, type: category, values: [a, b]}\n"
            "    - {name: pair, type: preference, prompt: 'Answer {{ q }}', min_margin: 1}\n"
            "    - {name: question, type: expression, template: '{{ q }}'}\n"
        ),
        str(tmp_path / "s.yaml"),
    )
    out = _round(spec, Store(str(tmp_path / "store")), SameScore(), SameScore())
    assert not out.verified["accepted"].any()
    assert out.verified["reject_reason"].str.contains("a tie: margin 0 is below min_margin 1").all()


# -- training layouts ------------------------------------------------------------------------------------------


def test_export_layouts_load_back_with_datasets_in_trls_column_types(tmp_path, smoke_generator):
    """messages / dpo / alpaca / raw written as datasets and loaded back: the columns and feature types that TRL's
    SFTTrainer (messages: list of {role, content}) and DPOTrainer (prompt, chosen, rejected: strings) read."""
    import datasets

    from synthflow.spec import ExportSpec
    from synthflow.stages.export import ExportTarget, export_table
    from synthflow.stages.layouts import LayoutError, training_layout

    spec = parse_spec(spec_text(MULTI_CALL), str(tmp_path / "s.yaml"))
    store = Store(str(tmp_path / "store"))
    ts = _round(spec, store, smoke_generator, smoke_generator).training_set.infer_objects()
    rec = store.write(spec.name, "training_set", ts, partition="p")
    ts = store.read(spec.name, "training_set", "p", version=rec.version)  # as export reads it: from Parquet
    n_synth = int((ts["_source"] == "synthetic").sum())
    string = datasets.Value("string")

    def exported(fmt: str, **keys) -> datasets.Dataset:
        s = spec.model_copy(update={"export": ExportSpec(format=fmt, **keys)})
        url = str(tmp_path / fmt)
        export_table(training_layout(ts, s), "card", ExportTarget(format="hf", url=url))
        return datasets.load_from_disk(url)

    conv = exported("messages")
    assert conv.column_names == ["messages"] and len(conv) == n_synth  # real seed rows have no dialogue
    assert conv.features["messages"] == datasets.List({"role": string, "content": string})
    assert conv[0]["messages"][0]["role"] == "user"

    sft = exported("messages", prompt="harder", response="question.text", system="Be brief.")
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]

    dpo = exported("dpo")
    assert dpo.column_names == ["prompt", "chosen", "rejected"] and len(dpo) == n_synth
    assert all(dpo.features[c] == string for c in dpo.column_names)

    alpaca = exported("alpaca", prompt="harder", response="question.text")
    assert alpaca.column_names == ["instruction", "input", "output"]
    assert all(alpaca.features[c] == string for c in alpaca.column_names) and alpaca[0]["input"] == ""

    raw = exported("raw")
    assert {"dialogue", "pair.chosen", "_source", "_round"} <= set(raw.column_names) and len(raw) == len(ts)

    inferred = exported("alpaca")  # the evolved instruction, answered by the last llm column
    assert inferred["instruction"] == alpaca["instruction"] and inferred["output"] == alpaca["output"]

    one = parse_spec(
        spec_text("    - {name: question, type: llm, prompt: hi}\n") + "export: {format: alpaca}\n",
        str(tmp_path / "t.yaml"),
    )
    with pytest.raises(LayoutError, match="needs export.prompt and export.response"):
        training_layout(ts, one)
    with pytest.raises(LayoutError, match="needs a preference column"):
        training_layout(ts, one.model_copy(update={"export": ExportSpec(format="dpo")}))


@pytest.mark.parametrize(
    ("example", "layout"),
    [
        ("persona_sft.yaml", ["messages"]),
        ("dpo_pairs.yaml", ["prompt", "chosen", "rejected"]),
        ("support_dialogues.yaml", ["messages"]),
    ],
)
def test_examples_run_a_round_through_dagster_on_the_smoke_profile_and_export(
    project, smoke_model_dir, tmp_path, example, layout
):
    import datasets

    from synthflow.dagster.export import run_export
    from synthflow.dagster.runner import run_rounds

    path = project / "assets" / example
    text = path.read_text()
    for key in ("rows_per_round", "candidate_budget", "batch_size"):  # small: plumbing on the smoke model
        text = "\n".join(
            f"  {key}: {3 if key == 'rows_per_round' else 6}" if line.startswith(f"  {key}:") else line
            for line in text.splitlines()
        )
    path.write_text(text + "\n")
    spec = load_spec(path)
    with dg.instance_for_test() as instance:
        [summary] = run_rounds(
            spec, 1, profile="smoke", project_root=project, instance=instance, echo=lambda m: None
        )
        assert summary.accepted > 0, summary
        out = run_export(
            spec, to=str(tmp_path / "out"), profile="smoke", project_root=project, instance=instance
        )
    ds = datasets.load_from_disk(out.location)
    assert ds.column_names == layout and len(ds) == summary.synthetic_rows
    print(example, summary.candidates, "candidates,", summary.accepted, "accepted,", summary.rejected_by)


def test_seed_text_must_name_a_generated_column():
    [(line, field, msg)] = problems(spec_text("    - {name: topic, type: category, values: [a]}\n"))
    assert (line, field) == (5, "seed.text") and "'question' is none of ['topic']" in msg


def test_a_column_may_read_a_later_one_the_fill_order_follows_the_references(tmp_path):
    from synthflow.stages.columns.dag import column_params

    spec = parse_spec(
        spec_text(
            "    - {name: question, type: expression, template: '{{ topic }} in {{ level }}'}\n"
            "    - {name: level, type: category, values: [easy]}\n"
            "    - {name: topic, type: category, values: [rates]}\n"
        ),
        str(tmp_path / "s.yaml"),
    )
    assert [p.name for p in column_params(spec)] == ["level", "topic", "question"]
    assert list(_sampler_rows(spec, 1, 2)["question"]) == ["rates in easy"] * 2


@pytest.mark.slow
def test_the_three_examples_on_the_default_cpu_model_accept_real_rows(project, tmp_path):
    """One small round of each example on the `local` profile (SmolLM2-135M-Instruct on the CPU)."""
    from synthflow.dagster.runner import run_rounds

    accepted = {}
    for example in ("persona_sft.yaml", "dpo_pairs.yaml", "support_dialogues.yaml"):
        path = project / "assets" / example
        text = path.read_text()
        for key, value in (("rows_per_round", 1), ("candidate_budget", 3), ("batch_size", 3)):
            text = "\n".join(
                f"  {key}: {value}" if line.startswith(f"  {key}:") else line for line in text.splitlines()
            )
        path.write_text(text.replace("min_margin: 1", "min_margin: 0") + "\n")  # a 135M judge ties often
        spec = load_spec(path)
        with dg.instance_for_test() as instance:
            [s] = run_rounds(
                spec, 1, profile="local", project_root=project, instance=instance, echo=lambda m: None
            )
        assert "smoke" not in s.generator
        store = Store(load_profile_root(project))
        synth = store.read(spec.name, "training_set", s.partition)
        synth = synth[synth["_source"] == "synthetic"]
        accepted[example] = (s.candidates, s.accepted, s.rejected_by)
        print(example, accepted[example])
        print(synth.drop(columns=[c for c in synth.columns if c.startswith("_")]).to_string(max_colwidth=160))
        assert s.accepted >= 1, (example, s)


def load_profile_root(project: Path) -> str:
    from synthflow.profiles import load_profile

    return load_profile("local", project).store_root()


def test_export_layout_columns_are_checked_at_load():
    text = spec_text(
        "    - {name: q, type: llm, prompt: hi}\n    - {name: question, type: expression, template: x}\n"
    )
    bad = problems(text + "export: {format: messages, prompt: qq, response: q}\n")
    assert [(f, m.split(" is not")[0]) for _, f, m in bad] == [("export.prompt", "'qq'")]
    [(line, field, msg)] = problems(text + "export:\n  format: dpo\n")
    assert (line, field) == (20, "export.format") and "preference column" in msg
