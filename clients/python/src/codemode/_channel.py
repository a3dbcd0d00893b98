"""Turns (target, token, TLS settings) into a configured gRPC channel.

One place decides how the token travels: as call credentials on TLS channels
(gRPC's own model, which refuses to leak tokens over plaintext), and through a
metadata interceptor only on plaintext channels to the local machine, where
call credentials are refused by gRPC but the token cannot leave the host.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any, Sequence, Union

import grpc
import grpc.aio

from codemode._credentials import discover_token

PemSource = Union[bytes, str, "os.PathLike[str]", None]

#: Generous: artifact chunks are 1 MiB but list pages of large skills may be big.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024

#: Keepalive pings only while calls are active, so idle clients do not earn
#: "too_many_pings" GOAWAYs; pings detect dead connections under long Executes.
DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.primary_user_agent", "codemode-python"),
)


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS settings. Each PEM is given as bytes, or as a path (str / PathLike).

    ``client_certificate`` + ``client_key`` enable mutual TLS;
    ``server_name_override`` is for test certificates whose name differs from
    the target host.
    """

    root_certificates: PemSource = None
    client_certificate: PemSource = None
    client_key: PemSource = None
    server_name_override: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("TLSConfig: client_certificate and client_key must be given together")
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates),
            private_key=_read_pem(self.client_key),
            certificate_chain=_read_pem(self.client_certificate),
        )


TLSSetting = Union[None, bool, TLSConfig]


def _read_pem(source: PemSource) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    with open(os.fspath(source), "rb") as f:
        return f.read()


def is_local_target(target: str) -> bool:
    """True for unix sockets and loopback addresses, where plaintext is acceptable."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class ChannelSettings:
    """Everything needed to open a channel; validated once, used by both flavours."""

    target: str
    token: str | None = None
    tls: TLSSetting = None
    options: Sequence[tuple[str, Any]] = ()
    allow_insecure_token: bool = False

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("target must be 'host:port' or 'unix:/path'")
        if self.token is None:  # find one (env, then the local server's file); "" = none
            object.__setattr__(self, "token", discover_token(is_local_target(self.target)))
        if (
            self.token
            and not self.tls
            and not self.allow_insecure_token
            and not is_local_target(self.target)
        ):
            raise ValueError(
                f"refusing to send the API token in plaintext to {self.target!r}: "
                "use tls=True / TLSConfig, or pass allow_insecure_token=True"
            )

    def channel_options(self) -> list[tuple[str, Any]]:
        overridden = {key for key, _ in self.options}
        opts = [o for o in DEFAULT_OPTIONS if o[0] not in overridden] + list(self.options)
        if isinstance(self.tls, TLSConfig) and self.tls.server_name_override:
            opts.append(("grpc.ssl_target_name_override", self.tls.server_name_override))
        return opts

    def _secure_credentials(self) -> grpc.ChannelCredentials:
        base = self.tls.credentials() if isinstance(self.tls, TLSConfig) else grpc.ssl_channel_credentials()
        if self.token:
            return grpc.composite_channel_credentials(
                base, grpc.access_token_call_credentials(self.token)
            )
        return base

    def sync_channel(self) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(self.target, self._secure_credentials(), self.channel_options())
        channel = grpc.insecure_channel(self.target, self.channel_options())
        if self.token:
            channel = grpc.intercept_channel(channel, _SyncTokenInterceptor(self.token))
        return channel

    def aio_channel(self) -> grpc.aio.Channel:
        """Must be called inside the running event loop that will use the channel."""
        if self.tls:
            return grpc.aio.secure_channel(
                self.target, self._secure_credentials(), self.channel_options()
            )
        interceptors = _aio_token_interceptors(self.token) if self.token else None
        return grpc.aio.insecure_channel(
            self.target, self.channel_options(), interceptors=interceptors
        )


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    merged = [(k, v) for k, v in (metadata or ()) if k != "authorization"]
    merged.append(("authorization", f"Bearer {token}"))
    return merged


class _SyncCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _SyncTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer`` to every call on a plaintext local channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _SyncCallDetails(details, _with_token(details.metadata, self._token))

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*_with_token(details.metadata, token)),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._token), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._token), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._token), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._token), request_iterator)


def _aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """grpc.aio dispatches interceptors by class, so one per call kind is needed."""
    return [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
