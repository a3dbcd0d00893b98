"""Checks that artifact data loads back as its declared type, chunk by chunk.

`bytes` needs nothing and `text` is checked by an incremental UTF-8 decoder, so
both stream in constant memory. `json` has no incremental parser in the standard
library: its chunks are kept and parsed once at the end (with hooks that build
no containers or numbers), which is why JSON artifacts have a lower size limit
(MAX_JSON_ARTIFACT_BYTES) and hold their upload-budget reservation until then.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from server.storage.errors import ArtifactInvalidError

MAX_JSON_ARTIFACT_BYTES = 16 * 1024 * 1024


def _discard(*_args: Any) -> None:
    return None


class DataCheck:
    """`feed` every chunk, then `finish`; raises ArtifactInvalidError on bad data."""

    #: True when the check keeps the chunks it was fed (their memory stays in use).
    keeps_data = False

    def feed(self, chunk: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


class _TextCheck(DataCheck):
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, chunk: bytes) -> None:
        try:
            self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise ArtifactInvalidError(f"artifact data is not valid text: {exc}", field="data") from exc

    def finish(self) -> None:
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ArtifactInvalidError(f"artifact data is not valid text: {exc}", field="data") from exc


class _JsonCheck(DataCheck):
    keeps_data = True

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def finish(self) -> None:
        data, self._chunks = b"".join(self._chunks), []
        try:
            json.loads(data, object_pairs_hook=_discard, parse_int=_discard, parse_float=_discard)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArtifactInvalidError(f"artifact data is not valid json: {exc}", field="data") from exc


def data_check(type_: str) -> DataCheck:
    if type_ == "text":
        return _TextCheck()
    if type_ == "json":
        return _JsonCheck()
    return DataCheck()


__all__ = ["DataCheck", "MAX_JSON_ARTIFACT_BYTES", "data_check"]
