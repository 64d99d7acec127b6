"""decontaminate: benchmark rows planted among clean rows are caught (verbatim by n-grams, paraphrases by the real
MiniLM embedder), the false-positive rate on clean rows is measured, and the blocking training-set check keeps a
contaminated training set out of later rounds, through a real Dagster instance.

The benchmark (tests/data/gsm8k_style_test.jsonl) is 50 GSM8K-style questions written for these tests; the
paraphrases and the clean rows below are written by hand, the clean ones on the same topics (shops, trains,
gardens, ages) so that the false-positive rate is measured where it is hardest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys
from synthflow.generators.base import GenerationRequest, GenerationResult
from synthflow.spec import VerifierSpec, parse_spec
from synthflow.stages.session import failed_checks
from synthflow.stages.verifiers.base import VerifyContext
from synthflow.stages.verifiers.benchmarks import ReferenceSpec, build_ngram_index, load_benchmark, words
from synthflow.stages.verifiers.decontaminate import training_set_check
from synthflow.stages.verifiers.registry import build
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.verifier_kit import candidate_rows

DATA = Path(__file__).parent / "data"
BENCH_FILE = DATA / "gsm8k_style_test.jsonl"
BENCH = [json.loads(line)["question"] for line in BENCH_FILE.read_text().splitlines()]

# (benchmark row, hand-written paraphrase): same problem, other words.
PARAPHRASES = [
    (0, "Every morning Maria makes 24 cookies, which she sells for $2 apiece at the farmers' market. On Saturday "
        "only 5 were left unsold. What were her Saturday earnings?"),
    (1, "There are 38 riders on a bus when it departs. Twelve get off at the first stop while seven board. Then at "
        "stop two, half of those still aboard leave. How many riders remain?"),
    (2, "On school days Tom gets through 15 pages of his book, and on Saturdays and Sundays he reads 40 pages a day. "
        "What is his page count over a fortnight?"),
    (4, "Jenna owns three times the number of stickers her brother Luke owns. Between them there are 96 stickers. "
        "How many belong to Jenna?"),
    (6, "Muffins come six to a box at a bakery. A school wants one muffin for each of its 137 pupils. What is the "
        "smallest number of boxes it has to buy?"),
    (8, "There were 1,250 books in a library. After giving 15% of them to a school, the library purchased 80 more. "
        "What is the library's book count now?"),
    (12, "Olivia paid for four notebooks costing $3 each and six pens costing $1.25 each using a $50 bill. What "
         "change did she get back?"),
    (15, "Out of his 120 marbles, Sam hands a quarter to his cousin, then gives his friend a sixth of what is left. "
         "How many marbles remain with Sam?"),
    (21, "Kevin's sister is four years younger than he is. Six years from now their ages will add up to 40. What is "
         "Kevin's age today?"),
    (23, "On a farm there are only chickens and cows: 30 animals with 84 legs between them. How many of the "
         "animals are cows?"),
]

# Clean rows: new problems, many on the benchmark's topics.
CLEAN = [
    "A baker fills trays with 18 croissants each. She bakes 7 trays and gives 11 croissants to her neighbours. "
    "How many croissants does she have left?",
    "A tram starts its route empty. At each of 6 stops, 9 people board and 4 people leave. How many people are on "
    "the tram after the last stop?",
    "Rita reads 22 pages a day. Her book has 418 pages. On which day does she finish the book?",
    "A vegetable patch has 7 rows of carrots with 31 carrots per row. Rabbits eat 19 carrots. How many carrots "
    "are left?",
    "Noah has 14 fewer baseball cards than his friend Eli, who has 53. How many cards do they have together?",
    "A running track is 400 meters around. Jake runs 9 laps and then walks 300 meters. How far does he go?",
    "Eggs are packed in trays of 30. A restaurant uses 412 eggs in a week. How many full trays does it open?",
    "Dana earns 22 dollars an hour and works 35 hours a week. She saves 20 percent. How much does she save in 4 weeks?",
    "A museum had 3,400 visitors in May and 12 percent more in June. How many visitors came in June?",
    "Omar swims 800 meters on Tuesday and 1.2 kilometers on Thursday. How many meters does he swim in total?",
    "A goat farmer milks 16 goats, each giving 3 liters a day. How many liters of milk does he get in 10 days?",
    "A stadium has 45 sections of 120 seats. If 4,980 fans attend, how many seats are empty?",
    "Grace buys 3 kilograms of apples at 2.40 dollars per kilogram and a loaf of bread for 3.10 dollars. What does she spend?",
    "At noon the river was 2.3 meters deep. It rose 15 centimeters each hour for 6 hours. How deep was it then?",
    "A plane flies 720 kilometers in 1.5 hours. What is its average speed in kilometers per hour?",
    "Lily has 84 beads. She uses 3 beads for each bracelet and makes as many bracelets as she can. How many beads are left?",
    "A band has 36 musicians and one third play brass. How many musicians do not play brass?",
    "A tiler needs 25 tiles per square meter. How many tiles does he need for a floor that is 6 meters by 4 meters?",
    "Ivan wants a 260 dollar guitar and saves 20 dollars a week. How many weeks until he can buy it?",
    "A cake is cut into 16 pieces. Six children each eat 2 pieces. How many pieces are left?",
    "A bathtub holds 180 liters and fills at 12 liters per minute with the drain closed. How long does it take to fill?",
    "Mia is twice as old as her cousin. The sum of their ages is 27. How old is Mia?",
    "A laptop costs 900 dollars. It is discounted by 15 percent. What is the sale price?",
    "A zoo has ostriches and lions. There are 20 animals with 56 legs. How many lions are there?",
    "An apartment block has 12 floors with 6 flats on each floor. Each flat has 2 balconies. How many balconies are there?",
    "A kettle holds 1.7 liters. How many 250 milliliter cups can be filled from two full kettles?",
    "A courier drives 38 kilometers in the morning and 46 in the afternoon, 6 days a week. How far does he drive weekly?",
    "A teacher has 150 pencils to share equally among 6 classes of 25 students. How many pencils does each student get?",
    "A sunflower is 40 centimeters tall and grows 6 centimeters a week. How tall is it after 12 weeks?",
    "A fair sold 500 ride tickets at 4 dollars and 200 food tickets at 6 dollars. How much money did it take in?",
    "Write a Python function that returns the largest of three numbers.",
    "Explain why the sky looks blue during the day.",
    "Translate 'good morning' into Spanish and French.",
    "List three renewable sources of energy and one advantage of each.",
    "What is the capital of Australia, and why was it chosen?",
    "A clock gains 3 minutes every day. How many minutes fast is it after 3 weeks?",
    "Hannah walks her dog 2.5 kilometers twice a day. How far do they walk in a week?",
    "A farmer sells pumpkins for 4 dollars each. He sold 37 on Saturday and 29 on Sunday. What did he earn?",
    "A printer prints 24 pages per minute. How long does it take to print 10 copies of a 36 page report?",
    "A box holds 12 bottles of water. How many boxes are needed for 250 bottles?",
]

MATH_SPEC = f"""
name: t
seed:
  source: {BENCH_FILE}
  text: question
  columns: [{{name: question}}]
generate:
  prompt: "Write a problem."
  output_schema:
    type: object
    properties: {{question: {{type: string}}}}
"""

REFS = [{"name": "gsm8k_style", "source": str(BENCH_FILE), "column": "question"}]


def _ctx(embedder=None, generators=None) -> VerifyContext:
    return VerifyContext(
        spec=parse_spec(MATH_SPEC, str(DATA / "t.yaml")),
        reference=pd.DataFrame(),
        accepted=pd.DataFrame(),
        embedder=embedder,
        generators=dict(generators or {}),
    )


def _planted() -> tuple[pd.DataFrame, list[str]]:
    """Verbatim copies, light edits, paraphrases and clean rows, shuffled together; `kinds` says which is which."""
    records, kinds = [], []
    for i in (3, 7, 13, 19, 29, 41, 49):
        records.append({"question": BENCH[i]})
        kinds.append(f"verbatim:{i}")
    # A copy with a lead-in and its numbers changed: the wording still shares many 13-grams.
    for i in (10, 30):
        records.append({"question": "Here is a word problem. " + BENCH[i].replace("4", "5")})
        kinds.append(f"edited:{i}")
    for i, text in PARAPHRASES:
        records.append({"question": text})
        kinds.append(f"paraphrase:{i}")
    for text in CLEAN:
        records.append({"question": text})
        kinds.append("clean")
    order = pd.Series(range(len(records))).sample(frac=1, random_state=3).tolist()
    return candidate_rows([records[j] for j in order]), [kinds[j] for j in order]


def _verify(params: dict, rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
    out = build(VerifierSpec(type="decontaminate", **params))(rows, ctx)
    assert out.index.equals(rows.index)
    return out


# ---- the n-gram method ----------------------------------------------------------------------------------------


def test_ngrams_normalize_text_and_catch_verbatim_and_lightly_edited_copies():
    assert words("Maria's  COOKIES, 2.5 $!") == ["maria", "s", "cookies", "2", "5"]
    rows, kinds = _planted()
    out = _verify({"references": REFS, "methods": ["ngram"]}, rows, _ctx())
    by_kind = dict(zip(kinds, out.itertuples(), strict=True))
    for kind, v in by_kind.items():
        if kind.startswith(("verbatim", "edited")):
            row = int(kind.split(":")[1])
            assert not v.ok and v.method == "ngram" and v.benchmark == "gsm8k_style" and v.benchmark_row == row
            assert f"gsm8k_style row {row}: " in v.reason and BENCH[row][:30] in v.reason, v.reason
            assert "13-gram" in v.reason
    clean = out[[k == "clean" for k in kinds]]
    assert clean["ok"].all(), clean.loc[~clean["ok"], "reason"].tolist()


def test_n_and_min_overlap_are_configurable_and_short_benchmark_rows_match_whole(tmp_path: Path):
    bench = tmp_path / "short.jsonl"
    bench.write_text(json.dumps({"q": "What is 7 times 8?"}) + "\n" + json.dumps({"q": BENCH[0]}) + "\n")
    index = build_ngram_index(
        [load_benchmark(ReferenceSpec(name="s", source=str(bench), column="q"), tmp_path)], n=13
    )
    hit = index.best("Quick one: what is 7 times 8? Answer fast.", min_overlap=5)
    assert (hit.benchmark, hit.row, hit.shared) == ("s", 0, 1)  # a short row is one gram of its own length
    half = " ".join(BENCH[0].split()[:16])  # 16 words: four 13-grams of row 1
    assert index.best(half, min_overlap=4).row == 1
    assert index.best(half, min_overlap=5) is None
    index8 = build_ngram_index(index.benchmarks, n=8)
    assert index8.best(half, min_overlap=5).shared == 9


def test_references_come_from_any_fsspec_url_and_hub_ids_go_to_datasets(tmp_path: Path):
    import fsspec

    with fsspec.open("memory://benchmarks/gsm8k_style.jsonl", "wb") as f:
        f.write(BENCH_FILE.read_bytes())
    bench = load_benchmark(
        ReferenceSpec(name="g", source="memory://benchmarks/gsm8k_style.jsonl", column="question"), tmp_path
    )
    assert bench.texts == BENCH
    # No hub on these machines: the hub path is taken, and its failure names the dataset.
    with pytest.raises(ValueError, match=r"hf://datasets/no-such-org/no-such-bench: cannot load the Hugging Face"):
        load_benchmark(ReferenceSpec(name="h", source="hf://datasets/no-such-org/no-such-bench", column="q"), tmp_path)


# ---- embeddings: paraphrases, and the false-positive rate on clean rows --------------------------------------


def test_planted_paraphrases_and_copies_are_caught_with_a_low_false_positive_rate(minilm):
    rows, kinds = _planted()
    out = _verify({"references": REFS}, rows, _ctx(minilm))  # default: ngram then embedding, cos >= 0.85
    kinds_s = pd.Series(kinds, index=out.index)
    contaminated = ~kinds_s.eq("clean")
    caught = (~out["ok"])[contaminated]
    paraphrase = kinds_s.str.startswith("paraphrase")
    false_pos = (~out["ok"])[~contaminated]
    recall_para = float((~out["ok"])[paraphrase].mean())
    fp_rate = float(false_pos.mean())
    print(
        f"\ndecontaminate on {len(rows)} rows: caught {int(caught.sum())}/{int(contaminated.sum())} planted "
        f"(paraphrases {int((~out['ok'])[paraphrase].sum())}/{int(paraphrase.sum())}), "
        f"false positives {int(false_pos.sum())}/{len(false_pos)} clean rows = {fp_rate:.1%}; "
        f"cosine of paraphrases {out['cosine'][paraphrase].min():.3f}-{out['cosine'][paraphrase].max():.3f}, "
        f"of clean rows max {out['cosine'][~contaminated].max():.3f}"
    )
    for kind, v in zip(kinds, out.itertuples(), strict=True):
        if kind.startswith("paraphrase") and not v.ok:
            row = int(kind.split(":")[1])
            assert v.benchmark_row == row, (kind, v.reason)  # the match names the right benchmark row
            if v.method == "embedding":
                assert f"nearest gsm8k_style row {row} by embedding (cos " in v.reason, v.reason
    assert recall_para >= 0.8
    assert caught[~paraphrase[contaminated]].all()  # every verbatim and edited copy
    assert fp_rate <= 0.05


def test_llm_confirmation_goes_through_the_judge_and_can_clear_an_embedding_match(minilm):
    seen: list[GenerationRequest] = []

    class Judge:  # a scripted judge: controlled replies are what this test needs
        model_id = label = "scripted-judge"

        def generate(self, requests, progress=None):
            for req in requests:
                seen.append(req)
                prompt = req.messages[-1][1]
                # Clears the paraphrase of row 23 (chickens and cows), confirms the rest.
                flag = "chickens and cows: 30 animals" not in prompt
                reply = json.dumps({"rationale": "same problem", "contaminated": flag})
                yield req, GenerationResult(key="", text=reply, model="scripted-judge")

    rows = candidate_rows([{"question": t} for _, t in PARAPHRASES] + [{"question": CLEAN[0]}])
    params = {"references": REFS, "threshold": 0.6, "confirm": {"judge": "judge"}}
    out = _verify(params, rows, _ctx(minilm, {"judge": Judge()}))
    emb = out["method"] == "embedding"
    assert len(seen) >= emb.sum() and all(r.json_schema["required"] == ["rationale", "contaminated"] for r in seen)
    assert "BENCHMARK (gsm8k_style row" in seen[0].messages[-1][1]
    assert out["reason"][emb].str.contains(", confirmed by judge: same problem").all()
    cleared = out[out.index == rows.index[PARAPHRASES.index(next(p for p in PARAPHRASES if p[0] == 23))]]
    assert cleared["ok"].all()


def test_the_embedding_method_without_an_embedder_is_a_clear_error():
    rows = candidate_rows([{"question": CLEAN[0]}])
    with pytest.raises(ValueError, match=r"needs an embedder.*methods: \[ngram\]"):
        _verify({"references": REFS, "methods": ["embedding"]}, rows, _ctx())


# ---- parameters ----------------------------------------------------------------------------------------------


def test_bad_parameters_are_spec_errors_with_file_line_and_field(tmp_path: Path):
    from synthflow.spec import SpecError, load_spec

    text = MATH_SPEC.replace(f"source: {BENCH_FILE}", "source: seed.jsonl") + (
        "verify:\n"
        "  - type: decontaminate\n"
        "    references: [{name: g, source: b.jsonl, column: question, colum: x}]\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "p.yaml" in msg and "references.0.colum" in msg and "unknown parameter" in msg, msg
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if "colum: x" in t)
    assert f"p.yaml:{line}: verify[0].references[0].colum" in msg, msg
    with pytest.raises(ValueError, match="n: Input should be greater than or equal to 1"):
        VerifierSpec(type="decontaminate", references=REFS, n=0).checked_params()
    with pytest.raises(ValueError, match="benchmark names must be unique"):
        VerifierSpec(type="decontaminate", references=REFS * 2).checked_params()


def test_a_missing_benchmark_column_names_the_file_and_the_columns():
    rows = candidate_rows([{"question": CLEAN[0]}])
    refs = [{"name": "g", "source": str(BENCH_FILE), "column": "problem"}]
    with pytest.raises(ValueError, match=r"benchmark 'g': .*gsm8k_style_test.jsonl has no column 'problem'"):
        _verify({"references": refs, "methods": ["ngram"]}, rows, _ctx())


# ---- the training-set check -----------------------------------------------------------------------------------


def test_the_check_covers_new_rows_only_and_real_rows_too():
    spec = parse_spec(
        MATH_SPEC + f"verify:\n  - type: decontaminate\n    references: {json.dumps(REFS)}\n", str(DATA / "t.yaml")
    )
    previous = pd.DataFrame({"_id": ["seed-1"], "_source": ["real"], "question": [BENCH[5]]})
    training = pd.concat(
        [
            previous,
            pd.DataFrame(
                {
                    "_id": ["real-1-1", "c1", "c2"],
                    "_source": ["real", "synthetic", "synthetic"],
                    "question": [BENCH[9], CLEAN[3], CLEAN[4]],
                }
            ),
        ],
        ignore_index=True,
    )
    passed, meta = training_set_check(spec, previous, training)
    assert not passed and meta["checked_rows"] == 3 and meta["contaminated_rows"] == 1
    assert meta["examples"].startswith("real row real-1-1 shares") and "gsm8k_style row 9" in meta["examples"]
    assert training_set_check(spec, training, training)[0]  # nothing new: nothing to check
    no_check = parse_spec(
        MATH_SPEC + f"verify:\n  - {{type: decontaminate, check: false, references: {json.dumps(REFS)}}}\n",
        str(DATA / "t.yaml"),
    )
    assert training_set_check(no_check, None, training) is None


# ---- through Dagster ------------------------------------------------------------------------------------------

PIPELINE = """
name: bench_leak
seed:
  source: data/leak_seed.jsonl
  text: question
  columns: [{name: question}, {name: answer}]
generate:
  generator: leaky
  prompt: Write a problem.
  few_shot: 0
  output_schema:
    type: object
    properties: {question: {type: string}, answer: {type: string}}
    required: [question, answer]
  rows_per_round: 6
  candidate_budget: 6
verify:
  - type: decontaminate
    name: bench
    action: ACTION
    references: [{name: gsm8k_style, source: data/gsm8k_style_test.jsonl, column: question}]
accumulate:
  policy: accumulate
diversity:
  embedder: embedder
  clusters: 2
"""

LEAKY = '''
ROWS = ROWS_JSON
def generate(ctx):  # the planted rows in turn, however the round splits its requests
    return [ROWS[(ctx.block * ctx.n + i) % len(ROWS)] for i in range(ctx.n)]
'''


def _leak_project(project: Path, action: str) -> Path:
    assets = project / "assets"
    shutil.copy(BENCH_FILE, assets / "data" / "gsm8k_style_test.jsonl")
    seed = [{"question": q, "answer": "1"} for q in CLEAN[:6]]
    (assets / "data" / "leak_seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed))
    planted = [
        {"question": BENCH[7], "answer": "1"},  # verbatim
        {"question": PARAPHRASES[3][1], "answer": "72"},  # paraphrase of row 4
        *({"question": q, "answer": "2"} for q in CLEAN[10:14]),
    ]
    (assets / "leaky_gen.py").write_text(LEAKY.replace("ROWS_JSON", json.dumps(planted)))
    (assets / "bench_leak.yaml").write_text(PIPELINE.replace("ACTION", action))
    (project / "resources" / "leak.yaml").write_text(
        f"store:\n  root: {project / 'store'}\ngenerators:\n  leaky:\n    backend: python\n"
        f"    model: leaky_gen:generate\n    options: {{search_path: [{assets}]}}\n"
        "embedders:\n  embedder:\n    model: all-MiniLM-L6-v2\n"
    )
    return assets / "bench_leak.yaml"


def _defs(project: Path, action: str, extra: str = ""):
    import synthflow
    from synthflow.spec import load_spec

    path = _leak_project(project, action)
    if extra:
        path.write_text(path.read_text().replace("    action: ", extra + "    action: "))
        profile = project / "resources" / "leak.yaml"
        profile.write_text(profile.read_text().replace("embedders:", "  judge:\n    backend: smoke\nembedders:"))
    spec = load_spec(path)
    return spec, PipelineKeys(spec, ()), synthflow.build_pipeline_defs(spec, profile="leak", project_root=project)


def _round(defs, instance, keys, part: str):
    return materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], part, raise_on_error=False)


@pytest.mark.slow
def test_a_dagster_round_rejects_planted_benchmark_rows_and_its_check_passes(project: Path, minilm):
    spec, keys, defs = _defs(project, "reject")
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = _round(defs, instance, keys, "2026-01-01")
        assert res.success, failure_text(res)
        checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    check = checks["decontaminated"]
    assert check.passed and check.metadata["checked_rows"].value == 6 + 4  # the seed's rows and 4 synthetic
    rejected = store.read(spec.name, "rejected", "2026-01-01").set_index("question")
    assert rejected["rejected_by"].tolist() == ["bench", "bench"]
    assert rejected.loc[BENCH[7], "bench_method"] == "ngram"
    assert rejected.loc[PARAPHRASES[3][1], "bench_method"] == "embedding"
    assert "gsm8k_style row 4 by embedding" in rejected.loc[PARAPHRASES[3][1], "reject_reason"]
    training = store.read(spec.name, "training_set", "2026-01-01")
    assert len(training) == 10 and not set(training["question"]) & set(BENCH)


@pytest.mark.slow
def test_a_dagster_round_whose_chain_lets_benchmark_rows_through_fails_the_blocking_check(project: Path):
    spec, keys, defs = _defs(project, "check_only")  # the verifier rejects nothing: only the check guards
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = _round(defs, instance, keys, "2026-01-01")
        assert not res.success  # a blocking check failed: downstream in the run would not start
        checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
        check = checks["decontaminated"]
        assert not check.passed
        meta = {k: v.value for k, v in check.metadata.items()}
        # The verbatim copy is caught by n-grams; the paraphrase needs the verifier's embeddings.
        assert meta["contaminated_rows"] == 1 and "gsm8k_style row 7" in meta["examples"], meta
        assert meta["examples"].startswith("synthetic row ")
        rec = store.latest(spec.name, "training_set", "2026-01-01")
        assert failed_checks(rec) == ["decontaminated"]  # kept for audit, marked
        res = _round(defs, instance, keys, "2026-01-02")
        assert not res.success
        assert f"version {rec.version}) failed its blocking check 'decontaminated'" in failure_text(res)


def test_the_documented_snippets_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    import re

    repo = Path(__file__).resolve().parent.parent
    doc = (repo / "docs" / "verification.md").read_text()
    section = doc[doc.index("### `decontaminate`") : doc.index("### `pii`")]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    spec = parse_spec(MATH_SPEC + block, str(DATA / "t.yaml"))
    assert [v.type for v in spec.verify] == ["schema", "decontaminate"]
    params = spec.verify[1].checked_params()
    assert params.n == 13 and params.confirm.judge == "judge" and params.references[1].split == "test"
    monkeypatch.chdir(repo)
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("False ngram 11 contaminated: shares 15 13-gram(s) (100% of that row's)")
    assert printed[1].startswith("True None")


@pytest.mark.slow
def test_llm_confirmation_in_a_dagster_round_asks_the_profile_judge_through_the_request_cache(
    project: Path, minilm, smoke_model_dir
):
    from synthflow.stages.cache import stored_results

    # A low threshold sends several rows to the judge (the smoke model: random but schema-valid verdicts).
    extra = "    threshold: 0.3\n    confirm: {judge: judge, max_tokens: 64}\n"
    spec, keys, defs = _defs(project, "reject", extra)
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        assert _round(defs, instance, keys, "2026-01-01").success
        cached = stored_results(store, spec.name)
        verified = pd.concat(
            [store.read(spec.name, t, "2026-01-01") for t in ("verified", "rejected")], ignore_index=True
        )
        judged = verified[(verified["bench_cosine"] >= 0.3) & (verified["bench_method"] != "ngram")]
        assert len(judged) >= 2 and cached == 1 + len(judged)  # one generator block + one judge request each
        for _, row in judged.iterrows():
            if row["bench_ok"]:
                assert pd.isna(row["bench_method"])  # the judge cleared it
            else:
                assert ", confirmed by judge" in row["reject_reason"] or "not confirmed (judge" in row["reject_reason"]
        # Re-materializing the round asks nothing again: every judge verdict comes from the cache.
        assert _round(defs, instance, keys, "2026-01-01").success
        assert stored_results(store, spec.name) == cached
        again = pd.concat(
            [store.read(spec.name, t, "2026-01-01") for t in ("verified", "rejected")], ignore_index=True
        )
        assert sorted(again["bench_ok"].astype(str)) == sorted(verified["bench_ok"].astype(str))
