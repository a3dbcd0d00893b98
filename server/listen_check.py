"""Fails early, in words, when the --listen address is already taken.

gRPC reports a port in use with a raw C++ log line on stderr ("E1202 ... add_port.cc
... Address already in use") and then a generic bind failure. Binding a plain socket
first, the way gRPC will (SO_REUSEADDR, every resolved address), lets the server say
what is wrong and what to do before any gRPC object exists. A race with another
process taking the port in between still ends in gRPC's own error, which is rare.
"""

from __future__ import annotations

import errno
import socket


class AddressInUseError(OSError):
    """The message names the address and the two ways out."""


def check_listen_address(listen: str) -> None:
    """Raises AddressInUseError if a TCP `host:port` (port > 0) cannot be bound now."""
    if listen.startswith("unix:") or ":" not in listen:
        return
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        return  # config validation reports the malformed address
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # gRPC reports an unresolvable host itself
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise AddressInUseError(
                        f"cannot listen on {listen}: the address is already in use (is another codemode "
                        "server running?); stop that process, or pass another address with "
                        "--listen HOST:PORT (env CODEMODE_LISTEN)",
                    ) from None
                # EADDRNOTAVAIL (e.g. no IPv6) and the like: gRPC decides, as before
