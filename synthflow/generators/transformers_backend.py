"""Generation with plain transformers: small models on CPU, or one GPU. Also runs the smoke model.

The decode loop is our own (model forward with a KV cache) rather than `model.generate`, for two reasons:
- per-request determinism: every row samples from its own torch.Generator seeded from (seed, sample_index), so a
  request's output does not depend on which other requests share its batch;
- structured output: xgrammar's token bitmask plus a budget-aware closing plan (see structured.py) per row.

Rows are left-padded with explicit position ids, so padding does not shift positions; finished rows leave the batch
(their KV cache rows are dropped) so a batch costs only as much as its live rows.

Batch invariance. A per-row generator is not enough on its own: padding changes the shapes the kernels see, and the
float noise that follows (~3e-7 in the logits) flips a sampled token now and then, most of all with the smoke model's
near-uniform distributions. So, when `batch_invariant` is on (the default on CPU):
- attention runs row by row on the row's own keys, padding sliced away (`_rowwise_attention`), so a row's attention
  sees exactly the shapes it would see alone;
- a batch never runs with fewer than 4 rows (finished rows and fillers stay in as dead weight), because CPU BLAS
  takes another path, with other rounding, for matrices of 1-3 rows; from 4 rows up a row's result is the same.
Tests check that a request gives identical tokens alone and in mixed batches. On GPUs cuBLAS picks kernels by shape,
so there the guarantee is only per-row seeding, hence off by default.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from synthflow.generators.base import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    Usage,
    sample_seed,
)
from synthflow.generators.errors import ModelUnavailable
from synthflow.generators.packaged_models import hf_folder, is_gguf_model
from synthflow.generators.smoke_model import (
    MARKER_FILE,
    SMOKE_MODEL_NAME,
    build_smoke_model,
    default_smoke_model_dir,
)
from synthflow.generators.structured import JsonRow, SchemaGuide
from synthflow.quiet import no_load_bars

__all__ = ["ModelUnavailable", "SMOKE_LABEL", "TransformersGenerator", "sample_seed"]

SMOKE_LABEL = "smoke model (random weights)"
# Extra tokens a JSON row keeps in reserve beyond its closing plan: one sampled token (a ',' say) can make the
# plan several tokens longer, so the row starts closing a little before it strictly must.
_CLOSING_MARGIN = 8
_GREEDY_BELOW = 1e-5
# Below this many parameters a CPU forward is a string of small matmuls, where intra-op threads cost more in
# synchronisation than they save: the smoke model is 10x slower with 2 busy cores, and SmolLM2-135M is as fast on
# one thread as on two when the cores are free and far faster when they are shared. So such models decode
# single-threaded unless `num_threads` says otherwise.
_SMALL_MODEL_PARAMS = 1_000_000_000
_MIN_ROWS = 4  # see "Batch invariance" above
_ROWWISE = "synthflow_rowwise"




@dataclass
class _Row:
    request: GenerationRequest
    key: str
    prompt_ids: list[int]
    max_new: int
    rng: torch.Generator
    json: JsonRow | None = None
    tokens: list[int] = field(default_factory=list)
    text: str | None = None
    finish: str | None = None


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # Half precision on CPU is slow and lossy; small models are cheap in float32 anyway.
    return torch.float32


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the Hugging Face endpoint (HF_ENDPOINT respected)? Quick, no retries."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _rowwise_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA one row at a time on that row's keys only, so padding never changes what a row computes."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pads = kwargs.pop("synthflow_pads", None)
    if pads is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    kwargs.pop("is_causal", None)
    n_q = query.shape[2]
    window = getattr(module, "sliding_window", None)
    out = query.new_zeros((query.shape[0], n_q, query.shape[1], value.shape[-1]))
    for b, pad in enumerate(pads):
        q0 = pad if n_q > 1 else 0  # prefill: the row's pad queries get zeros; decode: its one query is real
        # Plain causal attention unless a sliding window actually cuts this row; only then use the model's mask.
        mask = None
        if window and attention_mask is not None and key.shape[2] - pad > window:
            mask = attention_mask[b : b + 1, :, q0:, pad:]
        o, _ = sdpa_attention_forward(
            module,
            query[b : b + 1, :, q0:],
            key[b : b + 1, :, pad:],
            value[b : b + 1, :, pad:],
            mask,
            dropout,
            scaling,
            is_causal=n_q > 1,
            **kwargs,
        )
        out[b, q0:] = o[0]
    return out, None


def _register_rowwise() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(_ROWWISE, _rowwise_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(_ROWWISE, sdpa_mask)


class TransformersGenerator:
    """A `Generator` over a transformers causal LM. `model="smoke"` builds and uses the smoke model."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_model_len: int | None = None,
        batch_invariant: bool | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.requested = model
        self.batch_size = max(1, int(batch_size))
        self.usage = Usage()
        self._device = _pick_device(device)
        self._dtype = _pick_dtype(dtype, self._device)
        self.batch_invariant = self._device.type == "cpu" if batch_invariant is None else batch_invariant
        path, is_smoke = self._resolve(model)
        self._model_id = SMOKE_MODEL_NAME if is_smoke else model
        self._label = SMOKE_LABEL if is_smoke else f"transformers:{model}"
        self._tokenizer, self._model = self._load(model, path)
        cfg = self._model.config
        limit = getattr(cfg, "max_position_embeddings", None) or 4096
        self.max_model_len = min(max_model_len, limit) if max_model_len else limit
        self._vocab = int(self._model.get_output_embeddings().weight.shape[0])
        self._eos = self._eos_ids()
        pad = self._tokenizer.pad_token_id
        self._pad = pad if pad is not None else (min(self._eos) if self._eos else 0)
        self._guide: SchemaGuide | None = None
        n_params = sum(p.numel() for p in self._model.parameters())
        if num_threads is not None:
            self._threads: int | None = max(1, int(num_threads))
        else:
            self._threads = 1 if self._device.type == "cpu" and n_params < _SMALL_MODEL_PARAMS else None

    # -- Generator protocol --------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def label(self) -> str:
        return self._label

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        """Yield (request, result) per request, batch by batch (shortest prompts first, to waste less padding)."""
        if self._model is None:
            raise RuntimeError("TransformersGenerator is closed")
        reqs = list(requests)
        total, done = len(reqs), 0
        rows: list[_Row] = []
        for req in reqs:
            row_or_result = self._prepare(req)
            if isinstance(row_or_result, GenerationResult):
                done += 1
                yield self._finish(req, row_or_result, done, total, progress)
            else:
                rows.append(row_or_result)
        rows.sort(key=lambda r: len(r.prompt_ids))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            t0 = time.perf_counter()
            try:
                self._decode(batch)
                results = [self._result(r) for r in batch]
            except Exception as exc:  # one bad batch must not end the round; its rows get an error instead
                err = f"{type(exc).__name__}: {exc}"
                results = [
                    GenerationResult(key=r.key, text="", model=self.model_id, error=err) for r in batch
                ]
            self.usage.wall_seconds += time.perf_counter() - t0
            for row, res in zip(batch, results, strict=True):
                done += 1
                yield self._finish(row.request, res, done, total, progress)

    def close(self) -> None:
        on_cuda = self._device.type == "cuda"
        self._model = None
        self._tokenizer = None
        self._guide = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    # -- loading ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _resolve(model: str) -> tuple[str, bool]:
        if model == "smoke":
            return str(build_smoke_model(default_smoke_model_dir())), True
        if is_gguf_model(model):
            return str(hf_folder(model)), False
        path = Path(model).expanduser()
        return model, (path / MARKER_FILE).is_file()

    def _load(self, model: str, path: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(path).expanduser().is_dir()
        if not local and (os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1):
            raise ModelUnavailable(model, f"no such directory: {path}")  # a path, not a hub id
        offline = local or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        unreachable = not offline and not _hub_reachable()
        # Without a reachable hub, transformers retries for about a minute before it gives up: use the cache only.
        offline = offline or unreachable
        try:
            with no_load_bars():
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
                lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=offline, dtype=self._dtype)
        except Exception as exc:
            # OSError, ValueError, hub errors ... depending on what is missing: all of them mean "can't load here".
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if unreachable:
                reason = "it is not in the local Hugging Face cache and the hub cannot be reached"
            raise ModelUnavailable(model, reason) from exc
        lm.to(self._device)
        lm.eval()
        if self.batch_invariant:
            _register_rowwise()
            try:
                lm.set_attn_implementation(_ROWWISE)
            except (ValueError, NotImplementedError):  # a model without SDPA support: seeded, not invariant
                self.batch_invariant = False
        return tokenizer, lm

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(getattr(self._model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self._tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    def _schema_guide(self) -> SchemaGuide:
        if self._guide is None:
            self._guide = SchemaGuide(self._tokenizer, self._vocab, sorted(self._eos))
        return self._guide

    # -- per request -----------------------------------------------------------------------------------------------

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(req.chat(), add_generation_prompt=True, tokenize=False)
        else:  # a base model: plain concatenation is the least surprising prompt
            text = "\n\n".join(content for _, content in req.messages) + "\n\n"
        # The chat template already wrote any BOS the model wants.
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def _prepare(self, req: GenerationRequest) -> _Row | GenerationResult:
        key = req.key(self.model_id)
        try:
            ids = self._prompt_ids(req)
            if not ids:
                return GenerationResult(
                    key=key, text="", model=self.model_id, error="empty_prompt: no tokens"
                )
            room = self.max_model_len - len(ids)
            if room <= 0:
                return GenerationResult(
                    key=key,
                    text="",
                    model=self.model_id,
                    prompt_tokens=len(ids),
                    error=f"prompt_too_long: {len(ids)} tokens, max_model_len {self.max_model_len}",
                )
            rng = torch.Generator(device="cpu")
            rng.manual_seed(sample_seed(req.seed, req.sample_index))
            row = _Row(req, key, ids, min(max(0, req.sampling.max_tokens), room), rng)
            if req.json_schema is not None:
                row.json = self._schema_guide().row(req.json_schema)
            return row
        except Exception as exc:  # a template or schema this model cannot take fails that request only
            return GenerationResult(
                key=key, text="", model=self.model_id, error=f"{type(exc).__name__}: {exc}"
            )

    def _result(self, row: _Row) -> GenerationResult:
        if row.text is None:
            row.text = self._decode_text(row)
        return GenerationResult(
            key=row.key,
            text=row.text,
            model=self.model_id,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.tokens),
            finish_reason=row.finish or "length",
        )

    def _finish(
        self,
        req: GenerationRequest,
        res: GenerationResult,
        done: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> tuple[GenerationRequest, GenerationResult]:
        self.usage.add(res)
        if progress is not None:
            progress(done, total)
        return req, res

    def _decode_text(self, row: _Row) -> str:
        ids = (
            row.tokens[:-1]
            if row.tokens and row.finish == "stop" and row.tokens[-1] in self._eos
            else row.tokens
        )
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # -- the decode loop -------------------------------------------------------------------------------------------

    def _decode(self, rows: list[_Row]) -> None:
        if self._threads is None:
            return self._decode_batch(rows)
        saved = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            return self._decode_batch(rows)
        finally:
            torch.set_num_threads(saved)

    @torch.inference_mode()
    def _decode_batch(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        for r in rows:
            if r.max_new <= 0:
                r.finish = "length"
        slots = [r for r in rows if r.finish is None]
        if not slots:
            return
        floor = _MIN_ROWS if self.batch_invariant else 1
        while len(slots) < floor:  # fillers: computed and thrown away, see "Batch invariance"
            slots.append(_Row(slots[0].request, "", slots[0].prompt_ids, 0, slots[0].rng, finish="filler"))
        dev = self._device
        width = max(len(r.prompt_ids) for r in slots)
        input_ids = torch.full((len(slots), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(slots), width), dtype=torch.long)
        for i, r in enumerate(slots):
            n = len(r.prompt_ids)
            input_ids[i, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        pads = [width - len(r.prompt_ids) for r in slots]
        # Positions count real tokens only, so a row's positions do not depend on the batch's padding.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = torch.tensor([len(r.prompt_ids) for r in slots], dtype=torch.long)
        mask = mask.to(dev)
        extra = {"synthflow_pads": pads} if self.batch_invariant else {}
        cache = DynamicCache(config=self._model.config)
        out = self._model(
            input_ids=input_ids.to(dev),
            attention_mask=mask,
            position_ids=positions.to(dev),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        logits = out.logits[:, -1, :].float()
        penalized = any(
            r.request.sampling.presence_penalty or r.request.sampling.frequency_penalty for r in slots
        )
        counts = torch.zeros((len(slots), self._vocab), device=dev) if penalized else None

        while True:
            live = [j for j, r in enumerate(slots) if r.finish is None]
            tokens = [self._pad] * len(slots)
            chosen = self._choose(
                logits[live], [slots[j] for j in live], None if counts is None else counts[live]
            )
            for j, t in zip(live, chosen, strict=True):
                tokens[j] = t
                self._push(slots[j], t)
            if counts is not None:
                counts[torch.tensor(live, device=dev), torch.tensor(chosen, device=dev)] += 1
            keep = [j for j, r in enumerate(slots) if r.finish is None]
            if not keep:
                return
            if len(keep) < len(slots):
                # Drop finished rows, but keep the batch at `floor` rows with finished ones as fillers.
                dead = [j for j in range(len(slots)) if j not in keep]
                sel_list = sorted(keep + dead[: max(0, floor - len(keep))])
                if len(sel_list) < len(slots):
                    sel = torch.tensor(sel_list, dtype=torch.long, device=dev)
                    cache.batch_select_indices(sel)
                    mask, next_pos = mask[sel], next_pos[sel.cpu()]
                    counts = counts[sel] if counts is not None else None
                    slots = [slots[j] for j in sel_list]
                    tokens = [tokens[j] for j in sel_list]
                    pads = [pads[j] for j in sel_list]
                    extra = {"synthflow_pads": pads} if self.batch_invariant else {}
            mask = torch.cat([mask, mask.new_ones((len(slots), 1))], dim=1)
            out = self._model(
                input_ids=torch.tensor(tokens, dtype=torch.long, device=dev)[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None].to(dev),
                past_key_values=cache,
                use_cache=True,
                **extra,
            )
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :].float()

    def _choose(self, logits: torch.Tensor, rows: list[_Row], counts: torch.Tensor | None) -> list[int]:
        """The next token of every row: penalties, grammar mask, then greedy or seeded top-k/top-p sampling."""
        dev = logits.device
        sp = [r.request.sampling for r in rows]
        if counts is not None:
            freq = torch.tensor([s.frequency_penalty for s in sp], device=dev)[:, None]
            pres = torch.tensor([s.presence_penalty for s in sp], device=dev)[:, None]
            logits = logits - freq * counts - pres * (counts > 0).float()

        forced: dict[int, int] = {}
        json_rows = [j for j, r in enumerate(rows) if r.json is not None]
        if json_rows:
            guide = self._schema_guide()
            bitmask = guide.allocate_bitmask(len(rows))
            for j in json_rows:
                row = rows[j]
                row.json.fill_bitmask(bitmask, j)
                tid = self._closing_token(row, bitmask, j)
                if tid is not None:
                    forced[j] = tid
            guide.apply_bitmask(logits, bitmask, json_rows)

        # One uniform draw per row per step, always: a row's random stream then depends on its own steps only.
        u = torch.stack([torch.rand((), generator=r.rng) for r in rows]).to(dev)
        temps = torch.tensor([s.temperature for s in sp], device=dev)
        greedy = temps < _GREEDY_BELOW
        scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        vocab = scaled.shape[-1]
        if any(s.top_k > 0 or s.top_p < 1.0 for s in sp):
            ordered, order = scaled.sort(dim=-1, descending=True, stable=True)
            ranks = torch.arange(vocab, device=dev)[None, :]
            top_k = torch.tensor([s.top_k if s.top_k > 0 else vocab for s in sp], device=dev)
            ordered = ordered.masked_fill(ranks >= top_k[:, None], float("-inf"))
            probs = torch.softmax(ordered, dim=-1)
            top_p = torch.tensor([min(max(s.top_p, 1e-9), 1.0) for s in sp], device=dev)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            ordered = ordered.masked_fill(probs.cumsum(-1) - probs > top_p[:, None], float("-inf"))
        else:  # plain sampling needs no sort: inverse-CDF over the vocabulary order is just as seeded
            ordered, order = scaled, torch.arange(vocab, device=dev).expand(len(rows), vocab)
        cdf = torch.softmax(ordered, dim=-1).cumsum(-1)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=vocab - 1)
        sampled = order.gather(1, pick).squeeze(1)
        chosen = torch.where(greedy, logits.argmax(dim=-1), sampled).tolist()
        for j, tid in forced.items():
            chosen[j] = tid
        return chosen

    def _closing_token(self, row: _Row, bitmask: torch.Tensor, j: int) -> int | None:
        """When a JSON row's budget is down to its closing plan, the plan's next token; else None (sample)."""
        assert row.json is not None
        guide = self._schema_guide()
        plan = row.json.closing_plan()
        if plan is None:
            return None
        plan_ids = guide.plan_tokens(plan) if plan else []
        remaining = row.max_new - len(row.tokens)
        if not row.json.closing and remaining > len(plan_ids) + 1 + _CLOSING_MARGIN:
            return None
        row.json.closing = True
        # An empty plan: the JSON is complete but may go on (a top-level number takes more digits), so stop now.
        candidates = plan_ids[:1] if plan_ids else sorted(self._eos)
        return next((t for t in candidates if row.json.allowed(bitmask, j, t)), None)

    def _push(self, row: _Row, token: int) -> None:
        row.tokens.append(token)
        if row.json is not None:
            # Terminated: the JSON is complete and the stop token accepted. A rejected token cannot happen under
            # the mask; if it does, the grammar cannot continue and the verifier judges what we have.
            if not row.json.accept(token) or row.json.terminated:
                row.finish = "stop"
        elif token in self._eos:
            row.finish = "stop"
        if row.finish is None and row.request.sampling.stop:
            text = self._decode_text(row)
            hits = [i for i in (text.find(s) for s in row.request.sampling.stop if s) if i >= 0]
            if hits:
                row.text = text[: min(hits)]
                row.finish = "stop"
        if row.finish is None and len(row.tokens) >= row.max_new:
            row.finish = "length"
