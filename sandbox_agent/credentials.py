"""Fail-closed loading of the agent's credentials and bootstrap configuration."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

DEFAULT_CLIENT_IDENTITY = "codemode-control-plane"
_DIR_FILES = {"token": "token", "cert_pem": "agent.crt", "key_pem": "agent.key", "ca_pem": "ca.crt"}


class CredentialsError(Exception):
    """The credentials are missing or malformed; the agent must not start."""


@dataclasses.dataclass(frozen=True)
class AgentCredentials:
    token: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    sandbox_id: str = ""
    client_identity: str = DEFAULT_CLIENT_IDENTITY
    interpreter: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:  # never print the token or key by accident
        return f"AgentCredentials(sandbox_id={self.sandbox_id!r}, client_identity={self.client_identity!r})"


def _build(document: dict[str, Any]) -> AgentCredentials:
    if not isinstance(document, dict):
        raise CredentialsError("credentials must be a JSON object")
    missing = [key for key in ("token", "cert_pem", "key_pem", "ca_pem") if not document.get(key)]
    if missing:
        raise CredentialsError(f"missing credentials: {', '.join(missing)}")
    for key in ("token", "cert_pem", "key_pem", "ca_pem"):
        if not isinstance(document[key], str):
            raise CredentialsError(f"credential {key} must be a string")
    token = document["token"].strip()
    if len(token) < 16:
        raise CredentialsError("the token is too short (at least 16 characters)")
    _check_pem(document)
    interpreter = document.get("interpreter") or {}
    if not isinstance(interpreter, dict):
        raise CredentialsError("interpreter must be a JSON object")
    return AgentCredentials(
        token=token,
        cert_pem=document["cert_pem"].encode(),
        key_pem=document["key_pem"].encode(),
        ca_pem=document["ca_pem"].encode(),
        sandbox_id=str(document.get("sandbox_id") or ""),
        client_identity=str(document.get("client_identity") or DEFAULT_CLIENT_IDENTITY),
        interpreter=interpreter,
    )


def from_fd(fd: int) -> AgentCredentials:
    """Reads the JSON document from `fd` to EOF and closes it, so no child inherits it."""
    try:
        with os.fdopen(fd, "rb", closefd=True) as stream:
            raw = stream.read()
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials from fd {fd}: {exc}") from exc
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CredentialsError(f"credentials on fd {fd} are not valid JSON: {exc}") from exc
    return _build(document)


def from_dir(path: str) -> AgentCredentials:
    document: dict[str, Any] = {}
    for key, name in _DIR_FILES.items():
        try:
            with open(os.path.join(path, name), encoding="utf-8") as stream:
                document[key] = stream.read()
        except OSError as exc:
            raise CredentialsError(f"cannot read {name} in {path}: {exc.strerror}") from exc
    config_path = os.path.join(path, "config.json")
    if os.path.exists(config_path):
        try:
            with open(config_path, encoding="utf-8") as stream:
                config = json.load(stream)
        except (OSError, ValueError) as exc:
            raise CredentialsError(f"cannot read {config_path}: {exc}") from exc
        if not isinstance(config, dict):
            raise CredentialsError("config.json must be a JSON object")
        for key in ("sandbox_id", "client_identity", "interpreter"):
            if key in config:
                document[key] = config[key]
    return _build(document)


def _check_pem(document: dict[str, Any]) -> None:
    """Malformed PEM would otherwise surface only at the first handshake; refuse now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        x509.load_pem_x509_certificate(document["cert_pem"].encode())
    except ValueError as exc:
        raise CredentialsError(f"cert_pem is not a PEM certificate: {exc}") from exc
    try:
        x509.load_pem_x509_certificates(document["ca_pem"].encode())
    except ValueError as exc:
        raise CredentialsError(f"ca_pem is not a PEM certificate: {exc}") from exc
    try:
        serialization.load_pem_private_key(document["key_pem"].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(f"key_pem is not an unencrypted PEM private key: {exc}") from exc
