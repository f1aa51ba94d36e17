"""gunicorn's gthread worker, made hard to starve: a thread gets a request only once it has all of it.

gthread hands a connection to a thread as soon as it is readable, and the thread
then blocks reading the rest of the head and body: HTTP_THREADS clients that send
half a head and stop hold every thread, and nothing is answered, health included.
`BufferingWorker` reads in its event loop instead, without blocking: each request's
head and body (by Content-Length or chunked, up to MAX_BODY_BYTES; see framing.py)
are buffered there, and only a complete request goes to a thread, whose parser
reads it from that buffer. A request not complete READ_TIMEOUT seconds after the
connection was accepted (on a kept-alive connection: after its next request began to
arrive) is answered 408 and closed. When all worker_connections are taken, the
connections that have been sending the longest are closed to make room, so slow
clients cannot crowd out new ones either.

The app reads a body through `FramedBody` (framed_body.py): a framing error gunicorn's
reader finds on the way is a 400, and the connection closes after it.

Everything else is gthread's: the threads, keep-alive, graceful SIGTERM draining,
streaming, and `gunicorn.socket` in the WSGI environ (conn.sock is untouched).
TLS connections (not used here) take gthread's own path.
"""

from __future__ import annotations

import errno
import resource
import select
import sys
import time
from dataclasses import dataclass, field
from functools import partial

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from server.http.framed_body import DeadlinePassed, FramedBody
from server.http.framing import RequestFrame
from server.settings import Settings

RECV_BYTES = 64 * 1024  # for heads
RECV_BODY_BYTES = 1024 * 1024  # once a body is coming: fewer, larger reads (as gunicorn's own reader)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TIMED_OUT_BODY = b'{"error": {"type": "request_timeout", "message": "the request did not arrive in time"}}\n'
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMED_OUT_BODY), _TIMED_OUT_BODY)
)


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, giving up at `deadline`: should a thread's parser need more
    than was buffered (a request handed over unframed), it cannot wait past the request's time."""

    deadline: float | None = None

    def chunk(self, size_hint=None):
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            poller = select.poll()  # not select(): descriptors may be past 1024
            poller.register(self.sock, select.POLLIN)
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise DeadlinePassed()
        return super().chunk(size_hint)


@dataclass(eq=False)
class Reading:
    """A connection whose request is still arriving."""

    conn: TConn
    deadline: float
    frame: RequestFrame
    buf: bytearray = field(default_factory=bytearray)
    continued: bool = False  # "100 Continue" sent
    registered: bool = False  # in the event loop's poller


class BufferingWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.read_timeout, self.max_body = settings.read_timeout, settings.max_body_bytes
        self.reading: dict[TConn, Reading] = {}  # insertion order: oldest first
        self.exit_code = 0

    def init_process(self):
        _raise_open_file_limit(self.worker_connections + 256)
        super().init_process()

    def stop_with(self, code: int) -> None:
        """Stop as on SIGTERM (what is in flight finishes), then exit with `code`: gunicorn's
        master halts the whole server when a worker exits with APP_LOAD_ERROR (4).
        Safe from any thread: it only flags the loop and wakes it."""
        self.exit_code = code
        self.handle_exit(None, None)

    def run(self):
        super().run()
        if self.exit_code:
            sys.exit(self.exit_code)

    def enqueue_req(self, conn):
        """Every path that would give a connection to a thread (accept, a kept-alive connection
        turning readable, bytes read ahead after an answer) comes here: read its request first."""
        if getattr(conn, "buffered", False) or self.cfg.is_ssl or conn.is_http2:
            conn.buffered = False
            return super().enqueue_req(conn)
        held = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        state = Reading(conn, time.monotonic() + self.read_timeout, RequestFrame(self.max_body), bytearray(held))
        conn.sock.setblocking(False)
        self.reading[conn] = state
        if not self._progress(state, first=True):
            self.poller.register(conn.sock, _EVENT_READ, partial(self._on_readable, state))
            state.registered = True

    def handle_request(self, req, conn):
        """gthread's, with the app reading the body through FramedBody. What the app leaves unread
        gunicorn's parser reads past before the next request, through its own reader, answering a
        framing error there itself (400): to it, FramedBody's errors would be unexpected (500)."""
        body = req.body
        if body is not None:
            req.body = FramedBody(body, req)
        try:
            return super().handle_request(req, conn)
        finally:
            req.body = body

    def _on_readable(self, state: Reading, _sock) -> None:
        self._progress(state)

    def _progress(self, state: Reading, first: bool = False) -> bool:
        """Read what has arrived and hand the request over once complete; True once the
        connection has left the reading state (handed over or closed)."""
        try:
            data = state.conn.sock.recv(RECV_BODY_BYTES if state.frame.head_end else RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            return self._drop(state)
        if data == b"":
            return self._drop(state)  # the client closed before finishing a request
        if data:
            state.buf += data
        elif not (first and state.buf):
            return False
        end = state.frame.feed(state.buf)
        if end is None:
            if state.frame.expects_continue and not state.continued:
                state.continued = True
                _send_quietly(state.conn.sock, CONTINUE)
            return False
        self._hand_over(state)
        return True

    def _hand_over(self, state: Reading) -> None:
        """Give the buffered request (and anything read beyond it) to a thread."""
        self._leave(state)
        conn = state.conn
        if conn.parser is None:
            conn.init()  # plain HTTP/1.x: only creates the parser, reads nothing
        if not isinstance(conn.parser.unreader, DeadlineUnreader):
            conn.parser.unreader = DeadlineUnreader(conn.sock)
        conn.parser.unreader.deadline = state.deadline
        conn.parser.unreader.unread(state.buf)
        conn.buffered = True
        self.enqueue_req(conn)

    def _leave(self, state: Reading) -> None:
        del self.reading[state.conn]
        if state.registered:
            self.poller.unregister(state.conn.sock)
            state.registered = False

    def _drop(self, state: Reading, answer: bytes | None = None) -> bool:
        """Close a connection whose request did not arrive (optionally answering it first)."""
        self._leave(state)
        if answer:
            _send_quietly(state.conn.sock, answer)
        self.nr_conns -= 1
        state.conn.close()
        return True

    def murder_pending(self):
        """Once per loop (at least every second): close requests past their deadline, and the
        slowest ones while every connection is taken. A stopping worker waits for them briefly."""
        super().murder_pending()
        now = time.monotonic()
        for state in list(self.reading.values()):
            if not self.alive:
                state.deadline = min(state.deadline, now + STOP_KEEPALIVE_LINGER)
            if state.deadline <= now:
                self._drop(state, TIMED_OUT if state.buf else None)
        for state in list(self.reading.values()):
            if self.nr_conns < self.worker_connections:
                break
            self._drop(state, TIMED_OUT if state.buf else None)


_EVENT_READ = 1  # selectors.EVENT_READ


def _send_quietly(sock, data: bytes) -> None:
    """A short answer on a non-blocking socket, best effort: the client may be gone."""
    try:
        sock.send(data)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, None):
            raise


def _raise_open_file_limit(wanted: int) -> None:
    """Each connection is a descriptor: raise the soft limit toward `wanted` (within the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
