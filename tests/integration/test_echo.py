"""The echo contract every echo server keeps (trio, uvloop and asyncio variants).

Each test runs once per variant (see conftest.py). Clients are plain blocking
or selector-driven stdlib sockets on 127.0.0.1, so what is tested is the
server's behaviour on the wire: every byte back in order, half-close, resets,
many and idle clients, bounded memory against a client that does not read,
max connections, idle timeout, SIGTERM drain and descriptor exhaustion.
Every network loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import random
import select
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Address, open_fd_count, parse_events, rss_bytes, wait_until
from tests.integration.conftest import EchoServer, StartEchoServer

# Ceiling on any single client operation that should succeed: roomy enough for a
# loaded 2-core CI machine, short enough that a hang fails the test quickly.
IO_TIMEOUT_S = 10.0

# Ceiling on a whole multi-megabyte exchange.
EXCHANGE_TIMEOUT_S = 30.0

# Payload sizes around the edges that matter: 1 byte, the 1 KiB benchmark
# message, the 64 KiB receive size, and up to the 4 MiB.
PAYLOAD_SIZES = (1, 2, 100, 1023, 1024, 1025, 65535, 65536, 65537, 300_007, 1 << 20, 4 << 20)

# Concurrent clients in the many-clients test, as the issue asks.
CONCURRENT_CLIENTS = 200

# Idle connections held open while another client is served.
IDLE_CLIENTS = 50

# Receive size of these clients; any value works, larger is fewer syscalls.
CHUNK = 64 * 1024


# ---------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------


def connect(address: Address, timeout: float = IO_TIMEOUT_S) -> socket.socket:
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; AssertionError if the server closes first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(CHUNK, size - len(buf)))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return recv_exact(sock, len(payload))


def read_to_eof(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    """Everything until the server's EOF (at most ``limit`` bytes, else AssertionError)."""
    buf = bytearray()
    while chunk := sock.recv(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise AssertionError(f"more than {limit} bytes before EOF")
    return bytes(buf)


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to the socket's timeout) for the server's EOF or reset; no data expected."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def set_linger_zero(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN: the client "vanishes" mid-stream."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass
class _Peer:
    sock: socket.socket
    chunks: list[bytes]
    next_chunk: int = 0
    offset: int = 0  # into chunks[next_chunk]
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False


def exchange_many(
    address: Address, sends: Sequence[Sequence[bytes]], timeout: float = EXCHANGE_TIMEOUT_S
) -> list[bytes]:
    """Open one connection per entry of ``sends``, all at once, and run them concurrently.

    Each connection sends its chunks in order (one send() per readiness event,
    so chunk boundaries reach the kernel as given), reads concurrently so no
    side can block the other, half-closes after its last chunk and reads until
    the server's EOF. Returns what each connection received. All sockets are
    closed on return; AssertionError if it takes longer than ``timeout``.
    """
    deadline = time.monotonic() + timeout
    peers: list[_Peer] = []
    sel = selectors.DefaultSelector()
    try:
        for chunks in sends:
            peers.append(_Peer(connect(address), [bytes(c) for c in chunks if c]))
        for peer in peers:
            peer.sock.setblocking(False)
            events = selectors.EVENT_READ
            if peer.chunks:
                events |= selectors.EVENT_WRITE
            else:
                peer.sock.shutdown(socket.SHUT_WR)
            sel.register(peer.sock, events, peer)
        open_peers = len(peers)
        while open_peers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{open_peers} of {len(peers)} exchanges unfinished")
            for key, events in sel.select(min(remaining, 1.0)):
                peer = key.data
                if events & selectors.EVENT_READ:
                    try:
                        data = peer.sock.recv(CHUNK)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        peer.eof = True
                        sel.unregister(peer.sock)
                        open_peers -= 1
                        continue
                    if data:
                        peer.received += data
                if events & selectors.EVENT_WRITE and peer.next_chunk < len(peer.chunks):
                    _send_some(peer)
                    if peer.next_chunk == len(peer.chunks):
                        peer.sock.shutdown(socket.SHUT_WR)
                        sel.modify(peer.sock, selectors.EVENT_READ, peer)
        return [bytes(peer.received) for peer in peers]
    finally:
        sel.close()
        for peer in peers:
            peer.sock.close()


def _send_some(peer: _Peer) -> None:
    chunk = peer.chunks[peer.next_chunk]
    try:
        sent = peer.sock.send(memoryview(chunk)[peer.offset :])
    except BlockingIOError:
        return
    peer.offset += sent
    if peer.offset == len(chunk):
        peer.next_chunk += 1
        peer.offset = 0


def exchange(
    address: Address, chunks: Sequence[bytes], timeout: float = EXCHANGE_TIMEOUT_S
) -> bytes:
    return exchange_many(address, [chunks], timeout)[0]


def random_chunks(rng: random.Random, payload: bytes) -> list[bytes]:
    """``payload`` cut at random points: tiny, small and large pieces mixed."""
    chunks, pos = [], 0
    while pos < len(payload):
        size = rng.choice((rng.randint(1, 16), rng.randint(1, 4096), rng.randint(1, 256 * 1024)))
        chunks.append(payload[pos : pos + size])
        pos += size
    return chunks


class Pattern:
    """A deterministic endless byte stream: ``take(offset, n)`` is its bytes at offset.

    Lets a test push and verify tens of MiB without keeping them: the period is
    not a power of two, so chunk boundaries drift across it.
    """

    PERIOD = (1 << 20) + 13

    def __init__(self, seed: int) -> None:
        block = random.Random(seed).randbytes(self.PERIOD)
        self._twice = block + block

    def take(self, offset: int, size: int) -> bytes:
        assert size <= self.PERIOD
        start = offset % self.PERIOD
        return self._twice[start : start + size]


# ---------------------------------------------------------------------------
# Echo semantics
# ---------------------------------------------------------------------------


def test_echoes_random_payloads_byte_exact_in_random_chunks(echo_address: Address) -> None:
    rng = random.Random(862)  # RFC 862; fixed so a failure reproduces
    for size in PAYLOAD_SIZES:
        payload = rng.randbytes(size)
        received = exchange(echo_address, random_chunks(rng, payload))
        assert len(received) == size, f"{size} B payload: {len(received)} B came back"
        assert received == payload, f"{size} B payload: bytes differ"


@settings(
    max_examples=25,  # each example is one connection; enough to shake out chunking bugs
    deadline=None,  # wall time depends on the machine's load, not on the server
    derandomize=True,  # the same examples every run: CI stays reproducible
)
@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=12))
def test_echoes_any_chunking_of_small_messages(echo_address: Address, chunks: list[bytes]) -> None:
    assert exchange(echo_address, chunks) == b"".join(chunks)


def test_half_close_gets_everything_back_then_eof(echo_address: Address) -> None:
    payload = random.Random(1).randbytes(64 * 1024)  # fits the socket buffers unread
    with connect(echo_address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == payload


def test_half_close_without_data_gets_eof(echo_address: Address) -> None:
    with connect(echo_address) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""


def test_many_round_trips_on_one_connection(echo_address: Address) -> None:
    rng = random.Random(2)
    with connect(echo_address) as sock:
        for _ in range(200):
            message = rng.randbytes(1024)
            assert round_trip(sock, message) == message


# ---------------------------------------------------------------------------
# Many clients, idle clients, resets
# ---------------------------------------------------------------------------


def test_200_concurrent_clients_each_get_their_own_bytes(echo_address: Address) -> None:
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randint(1, 16 * 1024)) for _ in range(CONCURRENT_CLIENTS)]
    sends = [random_chunks(rng, p) for p in payloads]
    received = exchange_many(echo_address, sends)
    mismatched = [
        i for i, (got, sent) in enumerate(zip(received, payloads, strict=True)) if got != sent
    ]
    assert not mismatched, f"{len(mismatched)} clients got wrong bytes, e.g. #{mismatched[0]}"


def test_idle_connections_do_not_delay_other_clients(echo_address: Address) -> None:
    idle: list[socket.socket] = []
    try:
        for i in range(IDLE_CLIENTS):
            sock = connect(echo_address)
            idle.append(sock)
            if i % 2:  # half of them said something once and then went quiet
                assert round_trip(sock, b"hello %d" % i) == b"hello %d" % i
        payload = random.Random(4).randbytes(256 * 1024)
        # A fresh client is fully served while all of them sit there.
        assert exchange(echo_address, random_chunks(random.Random(5), payload)) == payload
        with connect(echo_address) as sock:
            for _ in range(20):
                assert round_trip(sock, b"x" * 1024) == b"x" * 1024
        # And the idle ones are still being served.
        assert round_trip(idle[0], b"still here") == b"still here"
    finally:
        for sock in idle:
            sock.close()


def test_client_resets_mid_stream_leave_the_server_healthy(echo_server: EchoServer) -> None:
    address = echo_server.address
    blob = random.Random(6).randbytes(2 << 20)
    for i in range(10):
        sock = connect(address)
        try:
            if i % 2:  # half after a complete round trip, half mid-way through a big send
                assert round_trip(sock, b"ping") == b"ping"
            sock.setblocking(False)
            sent = 0
            for _ in range(64):  # push until the buffers are full (or 64 sends)
                try:
                    sent += sock.send(blob[sent : sent + CHUNK])
                except BlockingIOError:
                    break
            set_linger_zero(sock)
        finally:
            sock.close()  # RST: the server has unread input and unsent echo
    payload = random.Random(7).randbytes(100_000)
    assert exchange(address, random_chunks(random.Random(8), payload)) == payload
    if echo_server.process is not None:
        assert echo_server.process.proc.poll() is None, "server died after client resets"


# ---------------------------------------------------------------------------
# Memory against a client that sends but does not read
# ---------------------------------------------------------------------------

# What the client tries to push without reading: far more than the kernel can
# buffer on this path with the client's small buffers (server rcvbuf <= 32 MiB
# with tcp_rmem's max, sndbuf <= 4 MiB), so a bounded server must stall it.
SLOW_READER_PUSH = 96 << 20

# Total bytes the connection carries once the client does read, to prove it still works.
SLOW_READER_TOTAL = SLOW_READER_PUSH + (1 << 20)

# How long without progress counts as "the server may have stopped reading"...
STALL_S = 0.5

# ...and how much longer the client must stay blocked for that to count: one
# scheduling gap on a busy 2-core machine can exceed STALL_S, not this as well.
# If the socket turns writable meanwhile, it was a gap and the push goes on.
STALL_CONFIRM_S = 2.0

# RSS growth allowed while stalled: a bounded server holds about one receive
# buffer (64 KiB) per connection; this leaves room for allocator noise.
RSS_GROWTH_LIMIT = 16 << 20

# Client socket buffers: small and fixed (no autotuning) so the kernel holds little.
SMALL_SOCKET_BUFFER = 64 * 1024


def test_slow_reader_keeps_server_memory_bounded(echo_server: EchoServer) -> None:
    pid = echo_server.require_process().pid
    address = echo_server.address
    pattern = Pattern(9)
    baseline = rss_bytes(pid)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SOCKET_BUFFER)
        sock.settimeout(IO_TIMEOUT_S)
        sock.connect((address.host, address.port))
        sock.setblocking(False)

        sent, peak, stalled = 0, baseline, False
        deadline = time.monotonic() + EXCHANGE_TIMEOUT_S
        while sent < SLOW_READER_PUSH and time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], STALL_S)
            if not writable:
                peak = max(peak, rss_bytes(pid))
                # Confirm: still blocked, so the server really stopped reading.
                _, writable, _ = select.select([], [sock], [], STALL_CONFIRM_S)
                if not writable:
                    stalled = True
                    break
            try:
                sent += sock.send(pattern.take(sent, CHUNK))
            except BlockingIOError:
                continue
            if sent % (4 << 20) < CHUNK:
                peak = max(peak, rss_bytes(pid))
        peak = max(peak, rss_bytes(pid))  # after the confirmation window, too
        assert stalled, f"server took {sent >> 20} MiB from a client that never read"
        growth = peak - baseline
        assert growth < RSS_GROWTH_LIMIT, (
            f"server RSS grew {growth >> 20} MiB while a client pushed {sent >> 20} MiB unread"
        )

        # Now read: every byte comes back, the rest goes through, EOF ends it.
        received = _finish_pattern_exchange(sock, pattern, sent, SLOW_READER_TOTAL)
        assert received == SLOW_READER_TOTAL
    finally:
        sock.close()


def _finish_pattern_exchange(sock: socket.socket, pattern: Pattern, sent: int, total: int) -> int:
    """Send the pattern from ``sent`` to ``total``, half-close, verify the echo to EOF."""
    received = 0
    deadline = time.monotonic() + EXCHANGE_TIMEOUT_S
    shut = False
    while True:
        if sent == total and not shut:
            sock.shutdown(socket.SHUT_WR)
            shut = True
        want_write = [sock] if sent < total else []
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out with {received} of {total} bytes echoed"
        readable, writable, _ = select.select([sock], want_write, [], min(remaining, 1.0))
        if readable:
            data = sock.recv(CHUNK)
            if not data:
                return received
            assert data == pattern.take(received, len(data)), f"bytes differ at {received}"
            received += len(data)
        if writable:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(pattern.take(sent, min(CHUNK, total - sent)))


# ---------------------------------------------------------------------------
# Limits and timeouts (each with a private server)
# ---------------------------------------------------------------------------


# What every echo server's `stopped` line reports (README, section echo).
SUMMARY_FIELDS = {
    "signal",
    "accepted",
    "rejected",
    "idle_closed",
    "cut",
    "eof",
    "reset",
    "error",
    "accept_errors",
    "drain_used_s",
    "uptime_s",
}


def test_max_connections_closes_extra_ones_and_keeps_the_others(
    start_echo_server: StartEchoServer,
) -> None:
    svc = start_echo_server("--max-connections", "3", "--idle-timeout-s", "0")
    held = [connect(svc.address) for _ in range(3)]
    try:
        for i, sock in enumerate(held):  # a round trip proves each one is being served
            assert round_trip(sock, b"first %d" % i) == b"first %d" % i
        with connect(svc.address) as extra:
            assert closed_by_server(extra), "a connection over the limit was not closed"
        for i, sock in enumerate(held):
            assert round_trip(sock, b"again %d" % i) == b"again %d" % i
        held.pop().close()

        # A slot is free again once the server has seen that close.
        def new_client_served() -> bool:
            with connect(svc.address) as sock:
                try:
                    return round_trip(sock, b"new") == b"new"
                except (AssertionError, OSError):  # rejected: EOF or reset
                    return False

        wait_until(new_client_served, IO_TIMEOUT_S, "a new client to be served under the limit")
    finally:
        for sock in held:
            sock.close()
    assert svc.stop() == 0
    # Both servers log a rejection, and their summary, in the same vocabulary.
    events = parse_events(svc.output())
    rejected = [e for e in events if e["event"] == "connection" and e["end"] == "rejected"]
    assert rejected, "rejected connections are not logged"
    assert (rejected[0]["rejected"], rejected[0]["open"]) == ("1", "3")
    (summary,) = [e for e in events if e["event"] == "stopped"]
    assert summary.keys() >= SUMMARY_FIELDS, f"missing {SUMMARY_FIELDS - summary.keys()}"
    assert int(summary["rejected"]) == len(rejected)
    assert int(summary["eof"]) >= 1  # the readiness probe's connection, at least


# Idle timeout of the private server in the idle test: long enough that a
# client pinging every PING_S is never mistaken for idle even when this shared
# 2-core machine stalls the test process for a second or two; the test runs for
# 2.5 of these windows, so it is also what the test costs.
IDLE_TIMEOUT_S = 3.0
PING_S = 0.1


def test_idle_timeout_closes_quiet_connections_only(start_echo_server: StartEchoServer) -> None:
    svc = start_echo_server("--idle-timeout-s", str(IDLE_TIMEOUT_S))
    silent = connect(svc.address)  # never sends
    quiet = connect(svc.address)  # sends once, then goes quiet
    busy = connect(svc.address)  # keeps talking
    try:
        assert round_trip(quiet, b"once") == b"once"
        quiet_since = time.monotonic()
        closed_at: dict[str, float] = {}
        watch = {silent: "silent", quiet: "quiet"}
        for sock in watch:
            sock.setblocking(False)
        deadline = time.monotonic() + IDLE_TIMEOUT_S * 3 + IO_TIMEOUT_S
        while len(closed_at) < 2 or time.monotonic() - quiet_since < 2.5 * IDLE_TIMEOUT_S:
            assert time.monotonic() < deadline, f"idle connections not closed: {closed_at}"
            assert round_trip(busy, b"ping") == b"ping", "an active connection was closed"
            readable, _, _ = select.select(list(watch), [], [], PING_S)
            for sock in readable:
                assert closed_by_server(sock)
                closed_at[watch.pop(sock)] = time.monotonic()
        assert closed_at["quiet"] - quiet_since >= IDLE_TIMEOUT_S / 2, "closed long before idle"
        assert round_trip(busy, b"still here") == b"still here"
    finally:
        for sock in (silent, quiet, busy):
            sock.close()


def test_a_short_quiet_spell_closes_nothing_by_default(echo_address: Address) -> None:
    # The shared server runs with the default idle timeout (60 s): a quiet half
    # second must neither close the connection nor make the server write.
    with connect(echo_address) as sock:
        assert round_trip(sock, b"a") == b"a"
        readable, _, _ = select.select([sock], [], [], 0.5)
        assert not readable, "server closed or wrote to a quiet connection"
        assert round_trip(sock, b"b") == b"b"


# ---------------------------------------------------------------------------
# SIGTERM drain
# ---------------------------------------------------------------------------

# Drain window of the private server in the drain test: long enough for the
# checks made during it on a busy machine, short to keep the suite fast.
DRAIN_S = 2.5

# Streaming clients kept busy across the signal, and their pacing.
STREAMERS = 3
STREAM_CHUNK = 8 * 1024
STREAM_PACE_S = 0.01
STREAM_WINDOW = 64 * 1024  # bytes a streamer lets be in flight before it waits for echo

# How long after the drain window the process may take to exit: the uvloop server
# waits up to CUT_WAIT_S (1 s) for the aborted connections' callbacks, and a busy
# machine delays the interpreter's exit. Far inside Docker's 10 s either way.
EXIT_SLACK_S = 2.0


class _Streamers(threading.Thread):
    """Clients that keep sending a pattern and checking its echo until the server closes."""

    def __init__(self, address: Address, count: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.socks = [connect(address) for _ in range(count)]
        self.sent = [0] * count
        self.received = [0] * count
        self.closed = [False] * count
        self.error: BaseException | None = None
        self._pattern = Pattern(10)
        self._deadline = deadline

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # re-raised in the test thread
            self.error = exc

    def _run(self) -> None:
        for sock in self.socks:
            sock.setblocking(False)
        while not all(self.closed) and time.monotonic() < self._deadline:
            for i, sock in enumerate(self.socks):
                if self.closed[i]:
                    continue
                if self.sent[i] - self.received[i] < STREAM_WINDOW:
                    try:
                        self.sent[i] += sock.send(self._pattern.take(self.sent[i], STREAM_CHUNK))
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        self.closed[i] = True
                        continue
                self._read(i, sock)
            time.sleep(STREAM_PACE_S)  # pacing only: correctness never depends on it

    def _read(self, i: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.closed[i] = True
                return
            if not data:
                self.closed[i] = True
                return
            expected = self._pattern.take(self.received[i], len(data))
            assert data == expected, f"streamer {i}: echo is not a prefix at {self.received[i]}"
            self.received[i] += len(data)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_sigterm_drains_open_connections_and_refuses_new_ones(
    start_echo_server: StartEchoServer,
) -> None:
    svc = start_echo_server("--drain-s", str(DRAIN_S), "--idle-timeout-s", "0")
    address = svc.address
    finisher = connect(address)  # opened before the signal, does its work during the drain
    streamers = _Streamers(address, STREAMERS, time.monotonic() + DRAIN_S + 3 * IO_TIMEOUT_S)
    try:
        assert round_trip(finisher, b"hi") == b"hi"
        streamers.start()
        wait_until(lambda: all(streamers.received), IO_TIMEOUT_S, "streamers to get echoes")

        svc.signal(signal.SIGTERM)
        signalled = time.monotonic()
        at_signal = list(streamers.received)

        # New connections are refused right away (the listener is closed): seen
        # while the server still drains, not merely once it has exited.
        wait_until(lambda: _refused(address), IO_TIMEOUT_S, "new connections to be refused")
        assert svc.proc.poll() is None, "connects were refused only once the server had exited"

        # A connection opened before the signal is still fully served.
        payload = random.Random(11).randbytes(32 * 1024)
        finisher.sendall(payload)
        finisher.shutdown(socket.SHUT_WR)
        assert read_to_eof(finisher) == payload

        code = svc.wait(timeout=DRAIN_S + IO_TIMEOUT_S)
        exited_after = time.monotonic() - signalled
        streamers.join(IO_TIMEOUT_S)
        assert not streamers.is_alive(), "streamers still open after the server exited"
        if streamers.error is not None:
            raise streamers.error
    finally:
        finisher.close()
        streamers.close()
    assert code == 0, f"exit status {code} after SIGTERM:\n{svc.output()[-3000:]}"
    # The streamers kept the drain busy, so the server used its window, then exited.
    assert DRAIN_S * 0.8 <= exited_after < DRAIN_S + EXIT_SLACK_S, (
        f"exited after {exited_after:.2f} s"
    )
    assert all(streamers.closed), "server left streaming connections open"
    for i in range(STREAMERS):
        assert streamers.received[i] > at_signal[i], f"streamer {i} got nothing during the drain"
        assert streamers.received[i] <= streamers.sent[i]


def _refused(address: Address) -> bool:
    """True once a connect to ``address`` is refused; a connection that gets in is closed."""
    try:
        sock = socket.create_connection((address.host, address.port), timeout=1.0)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    sock.close()
    return False


# ---------------------------------------------------------------------------
# Descriptor exhaustion
# ---------------------------------------------------------------------------

# Soft descriptor limit of the private server: low enough to exhaust in a few
# dozen connections, high enough for any variant's start-up.
FD_LIMIT = 64

# How long a connection beyond the limit is watched for an echo that must not come.
UNSERVED_WAIT_S = 1.0

# asyncio retries accept() 1 s after EMFILE, trio after 0.1 s: ample room.
RECOVERY_TIMEOUT_S = 15.0


def _echo_once(address: Address, payload: bytes, timeout: float) -> socket.socket | None:
    """Connect and round-trip ``payload``; the open socket if it came back, else None."""
    try:
        sock = connect(address, timeout)
    except OSError:
        return None
    try:
        if round_trip(sock, payload) == payload:
            return sock
    except (OSError, AssertionError):  # never accepted (timeout), shed, or reset
        pass
    sock.close()
    return None


def test_survives_descriptor_exhaustion(start_echo_server: StartEchoServer) -> None:
    svc = start_echo_server("--idle-timeout-s", "0", rlimit_nofile=FD_LIMIT)
    held: list[socket.socket] = []
    try:
        for i in range(FD_LIMIT + 16):
            if open_fd_count(svc.pid) >= FD_LIMIT:
                break  # every descriptor is in use: the next accept must fail
            sock = _echo_once(svc.address, b"conn %d" % i, IO_TIMEOUT_S)
            if sock is None:
                break  # accept failed and the server shed it (libuv does that)
            held.append(sock)
        else:
            pytest.fail(f"{len(held)} connections under a limit of {FD_LIMIT} descriptors")
        assert held, "no connection was served before the descriptors ran out"
        assert open_fd_count(svc.pid) >= FD_LIMIT - 1, "accepts failed before the fds ran out"

        # Out of descriptors: a new client is not served, the existing ones are.
        assert _echo_once(svc.address, b"beyond", UNSERVED_WAIT_S) is None
        assert round_trip(held[0], b"still here") == b"still here"
        assert svc.proc.poll() is None, "server died when descriptors ran out"
    finally:
        for sock in held:
            sock.close()

    def fresh_client_served() -> bool:
        sock = _echo_once(svc.address, b"fresh", IO_TIMEOUT_S)
        if sock is None:
            return False
        sock.close()
        return True

    wait_until(fresh_client_served, RECOVERY_TIMEOUT_S, "a fresh client once descriptors are free")
    assert svc.stop() == 0
    assert "Traceback" not in svc.output()
