"""The rtnetlink wire format: headers, attributes, and one request/answer exchange on a socket.

We speak the small subset of rtnetlink we use directly instead of through pyroute2: measured
here, pyroute2 0.9 costs 0.23 s to import and ~1 ms per request through its asyncio core, so a
50-container apply spent more time in the library than in the kernel. The subset is a dozen
message types and ~20 attributes, each pinned by a test against the real kernel.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from kernel import crashpoints

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
NLM_F_DUMP_INTR = 0x10
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12

HEADER = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_sequence = itertools.count(1)
RECV_BUFFER = 1 << 16
"""Above the 32 KiB the kernel ever puts in one dump datagram: nothing is truncated, and no
megabyte is allocated per recv on the hot path."""


class NetlinkError(OSError):
    """The kernel refused a request; `errno` says why."""


class DumpInterrupted(Exception):
    """The kernel flagged a dump as inconsistent (NLM_F_DUMP_INTR): the set changed under it."""


def attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def attributes(data: bytes, offset: int = 0, wanted: Collection[int] | None = None) -> dict[int, bytes]:
    """Attribute payloads by type (flags stripped); the last one wins for repeated types. Only
    those of the `wanted` types, when given: a link carries ~40 attributes (~1.5 KB), and
    copying out the ones nobody reads was most of parsing it."""
    found: dict[int, bytes] = {}
    unpack, size, end = _ATTR.unpack_from, _ATTR.size, len(data)  # the hot loop of every dump
    while offset + size <= end:
        length, kind = unpack(data, offset)
        if length < size:
            break
        kind &= NLA_TYPE_MASK
        if wanted is None or kind in wanted:
            found[kind] = data[offset + size:offset + length]
        offset += (length + 3) & ~3
    return found


def text(value: bytes | None) -> str | None:
    return None if value is None else value.rstrip(b"\0").decode(errors="replace")


def u32(value: bytes | None) -> int | None:
    return None if value is None else _U32.unpack_from(value)[0]


def s32(data: bytes, offset: int = 0) -> int:
    return int(_S32.unpack_from(data, offset)[0])


def done_errno(payload: bytes) -> int:
    """The errno of a dump the kernel gave up on, which ends with it negated in the NLMSG_DONE
    payload (a table strict checking names that does not exist, a header it refuses, ENOMEM);
    0 for a complete dump."""
    return -s32(payload) if len(payload) >= _S32.size else 0


_buffers = threading.local()


def _receive(sock: socket.socket) -> bytes:
    """One datagram, read into this thread's buffer and copied out at its own size. A recv of
    RECV_BUFFER makes a 64 KiB block and shrinks it to the answer in place: a pass over 1,000
    namespaces left thousands of small answers each at the head of a freed 64 KiB hole, and
    the agent's heap ~2-5 MiB larger once converged (bench/README)."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(RECV_BUFFER)
    size = sock.recv_into(buffer)
    with memoryview(buffer) as view:
        return bytes(view[:size])


def exchange(sock: socket.socket, kind: int, flags: int, body: bytes) -> Iterator[bytes]:
    """Send one request and yield the payload of each answer until the dump ends (NLMSG_DONE)
    or the request is acknowledged (a get must ask for the ack, so its end is known); a refusal,
    or a dump the kernel gave up on, raises NetlinkError."""
    seq = next(_sequence)
    sock.send(HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    interrupted = False
    while True:
        data = _receive(sock)
        offset = 0
        while offset + HEADER.size <= len(data):
            length, msg_type, msg_flags, msg_seq, _pid = HEADER.unpack_from(data, offset)
            payload = data[offset + HEADER.size:offset + length]
            offset += (length + 3) & ~3
            if msg_seq != seq:
                continue  # an answer to an earlier request we stopped reading (a retried dump)
            interrupted |= bool(msg_flags & NLM_F_DUMP_INTR)
            if msg_type == NLMSG_DONE:
                code = done_errno(payload)
                if code > 0:
                    raise NetlinkError(code, os.strerror(code))
                if interrupted:
                    raise DumpInterrupted()
                return
            if msg_type == NLMSG_ERROR:
                code = -s32(payload)
                if code:
                    raise NetlinkError(code, os.strerror(code))
                return  # the ack of a request
            yield payload


def request(sock: socket.socket, kind: int, flags: int, body: bytes) -> None:
    """A change, acknowledged by the kernel (or refused with NetlinkError)."""
    crashpoints.step("netlink")
    for _ in exchange(sock, kind, flags | NLM_F_ACK, body):
        pass


def dump(sock: socket.socket, kind: int, body: bytes) -> Iterator[bytes]:
    return exchange(sock, kind, NLM_F_DUMP, body)


@contextmanager
def strict_checking(sock: socket.socket) -> Iterator[None]:
    """Within it the kernel (4.20+) honours the filters a dump request's header names (the
    addresses of one link, the routes of one table) instead of answering with everything.
    Not nested: strict checking is off again afterwards, as every other request here expects."""
    sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
    try:
        yield
    finally:
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)


def get(sock: socket.socket, kind: int, body: bytes) -> list[bytes]:
    return list(exchange(sock, kind, NLM_F_ACK, body))


def new_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
