"""``spamsift daemon``: keep the engine loaded and filter for `spamsift.filter.client` requests.

`daemon_workers` threads, one open store each (reused: no connect, no WAL recovery, warm page
cache); further connections wait in the listen backlog. Each request runs exactly the
in-process filter (`spamsift.filter.cli.main`) with the client's arguments, stdin and the few
environment variables it needs, and with the caller identity the kernel reports for the
connecting process (SO_PEERCRED), never one the client claims.

The socket is world-writable on purpose: every local delivery uid must reach it, so the
daemon is a privilege boundary (docs/daemon.md, "Trust model"). It serves its own
configuration only (a request with --config or other SPAMSIFT_* variables is declined, and the
client filters in its own process with its own privileges), it never runs a program for a
request (the client runs the delivery agent), it looks at a home the client names only when it
is the caller's, and it bounds what one request may cost (max_message_size, the tokenizer's
caps, `daemon_workers`).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time

from spamsift.filter import cli, client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.metrics import Metrics
from spamsift.filter.engine import config, exitcodes, log, users
from spamsift.filter.engine.errors import (ConflictError, SpamsiftError, StorageError,
                                           command_failed)


def _write_batches(inbox, storage_url: str, timeout: float, use_syslog: bool,
                   parent: int | None = None, queued=None, done=None) -> None:
    """The writer process: commit queued batches in order, in groups, until None arrives,
    or until the daemon (`parent`) is gone and nothing is queued any more (a SIGKILLed daemon
    left it behind for ever).

    Items are (sequence number, uid, batch). A group is what arrives within `GROUP_WINDOW`
    of its first batch, at most `GROUP_BATCHES` batches or `GROUP_ROWS` rows, committed in
    one transaction: a page that several messages change is written once, and one WAL commit
    serves them all. `queued` (a shared counter) is lowered by each batch's `_weight` as it is
    taken; `done` (shared) is raised to the last sequence number written (or given up on)."""
    import queue

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    # Learning can wait; replies cannot. On 2 cores the writer's ~10 ms of CPU a message
    # competed with the next client and the daemon (median 26.0 ms before this).
    os.nice(10)
    store = None
    stopping = False
    while not stopping:
        try:
            item = inbox.get(timeout=ORPHAN_CHECK)
        except queue.Empty:
            if parent is not None and os.getppid() != parent:
                break
            continue
        if item is None:
            break
        group = [item]
        rows = _weight(item[2])
        window_ends = time.monotonic() + GROUP_WINDOW
        while len(group) < GROUP_BATCHES and rows < GROUP_ROWS:
            left = window_ends - time.monotonic()
            if left <= 0:
                break
            try:
                item = inbox.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                stopping = True
                break
            group.append(item)
            rows += _weight(item[2])
        if queued is not None:
            with queued.get_lock():
                queued.value -= rows
        store = _commit(store, group, storage_url, timeout, use_syslog)
        if done is not None:
            done.value = group[-1][0]
    if store is not None:
        store.close()


def _commit(store, group, storage_url: str, timeout: float, use_syslog: bool):
    """Write `group` in one transaction (three tries); if that keeps failing, batch by batch,
    so that one batch the database refuses does not take the others with it. The store to use
    next (None: open a new one)."""
    from spamsift.filter.engine.store.base import open_store

    items = [(uid, batch) for _seq, uid, batch in group]
    for attempt in range(3):
        try:
            if store is None:
                store = open_store(storage_url, timeout)
            store.commit_group(items)
            return store
        except SpamsiftError as exc:
            log.error(f"daemon: writer: {exc} (attempt {attempt + 1}, {len(items)} messages)",
                      use_syslog)
            if store is not None:
                store.close()
                store = None
    if len(items) > 1:
        for uid, batch in items:
            try:
                if store is None:
                    store = open_store(storage_url, timeout)
                store.commit(uid, batch)
            except SpamsiftError as exc:
                log.error(f"daemon: writer: {exc}: one message not learned", use_syslog)
                if store is not None:
                    store.close()
                    store = None
    return store


ORPHAN_CHECK = 5.0   # seconds between the writer's looks at whether the daemon still runs
SUBMIT_WAIT = 10.0   # seconds a reply may wait for room in the writer's queue
SYNC_WAIT = 10.0     # seconds a training request waits for earlier messages to be written
# A group commit: what arrives within GROUP_WINDOW of a group's first batch, bounded in
# batches and rows. See benchmarks/vs_bogofilter.py for what it writes per message.
GROUP_WINDOW = 0.05
GROUP_BATCHES = 100
GROUP_ROWS = 200_000
# Token and weight rows the writer's queue may hold: a batch of a message at the tokenizer's
# cap (20,000 tokens, as many weights) holds ~5 MB in this process until the writer takes it,
# so the queue is bounded by rows (~25 MB), not only by batches: a niced writer behind 16
# hostile clients let it grow without limit.
MAX_QUEUED_ROWS = 100_000


def _weight(batch) -> int:
    """What a batch holds while queued, in rows (at least 1)."""
    return 1 + len(batch.tokens) + len(batch.weights)


class _Writer:
    """Commits what inbound messages learned, in arrival order and in groups, off the reply
    path.

    A TEFT commit is most of what a message costs; the client only needs the stamped
    message. The writer is a process of its own: as a thread it held the interpreter lock
    while binding 650 rows and doubled the reply time (6 ms in-process, 14 ms through the
    daemon). The queue is bounded, so a burst slows replies instead of growing memory.

    What a crash loses: messages answered but not yet written -- the writer's open group (at
    most GROUP_WINDOW, GROUP_BATCHES) and what waited in the queue (at most MAX_QUEUED_ROWS
    rows; under a load the writer keeps up with, about one window). Those messages keep their
    headers, but were not learned and their signatures were not stored: a later report of one
    is a clear error (exit 65, unknown signature), never a wrong retrain. Mail is never lost.
    On SIGTERM everything queued is written before the daemon exits. A training request
    waits (`sync`) until every message answered before it is written, so a report of a
    message the daemon has just answered finds its signature.
    """

    def __init__(self, settings) -> None:
        import multiprocessing

        self.settings = settings
        self.lock = threading.Lock()
        self.context = multiprocessing.get_context("spawn")
        self.submitted = 0  # sequence number of the last batch queued
        self.done = self.context.Value("q", 0, lock=False)  # written by the writer only
        self._spawn()

    def _spawn(self) -> None:
        context = self.context
        # A new queue with each process: one whose reader was killed may hold its read lock.
        self.inbox = context.Queue(maxsize=1000)
        self.queued = context.Value("q", 0)
        self.done.value = self.submitted  # what an earlier writer had queued is gone
        self.process = context.Process(
            target=_write_batches, name="spamsift-writer", daemon=True,
            args=(self.inbox, self.settings.storage_url, self.settings.storage_timeout,
                  self.settings.syslog, os.getpid(), self.queued, self.done))

    def start(self) -> None:
        self.process.start()

    def _alive(self) -> None:
        """Replace a writer that died (the OOM killer, say), or nothing would be learned
        again and, once the queue was full, every reply would wait."""
        if not self.process.is_alive():
            log.error(f"daemon: the writer process ended (exit {self.process.exitcode}); "
                      "starting a new one: what it had queued was not learned",
                      self.settings.syslog)
            self._spawn()
            self.start()

    def submit(self, uid: int, batch) -> None:
        """Queue a batch. A queue full for `SUBMIT_WAIT` seconds drops this batch: mail
        first."""
        import queue
        weight = _weight(batch)
        deadline = time.monotonic() + SUBMIT_WAIT
        try:
            while self.queued.value + weight > MAX_QUEUED_ROWS and self.queued.value > 0:
                if time.monotonic() > deadline:
                    raise queue.Full
                time.sleep(0.005)
            with self.lock:
                self._alive()
                with self.queued.get_lock():
                    self.queued.value += weight
                self.submitted += 1
                try:
                    # Under the lock: sequence numbers reach the writer in order.
                    self.inbox.put((self.submitted, uid, batch),
                                   timeout=max(0.0, deadline - time.monotonic()))
                except queue.Full:
                    self.submitted -= 1
                    with self.queued.get_lock():
                        self.queued.value -= weight
                    raise
        except queue.Full:
            log.error(f"daemon: the writer's queue stayed full for {SUBMIT_WAIT:g} s: this "
                      "message was not learned", self.settings.syslog)

    def sync(self, timeout: float = SYNC_WAIT) -> bool:
        """Wait until every batch queued so far is written (or given up on); False when that
        took longer than `timeout` seconds."""
        with self.lock:
            self._alive()
            target = self.submitted
        deadline = time.monotonic() + timeout
        while self.done.value < target:
            if time.monotonic() > deadline:
                return False
            if not self.process.is_alive():
                with self.lock:
                    self._alive()
                return True
            time.sleep(0.002)
        return True

    def stop(self) -> None:
        """Write everything queued, then end."""
        import queue

        if self.process.is_alive():
            try:
                self.inbox.put(None, timeout=60)
            except queue.Full:
                pass
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()


LISTEN_BACKLOG = 128  # connections that wait while every worker is busy
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request
FRAME_SLACK = 1 << 20  # bytes of a request beyond max_message_size: arguments, environment
DRAIN_LIMIT = 1 << 30  # bytes read and thrown away from a too large request before closing


class _Server:
    """A listening socket and `workers` threads, each taking the next connection and
    filtering it with a store of its own (reused: no connect, no WAL recovery, warm page
    cache). A bounded number of threads bounds memory (each may hold a message of
    max_message_size several times over); further connections wait in the listen backlog.
    """

    def __init__(self, path: str, settings, config_path: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.own_env = {k: v for k, v in os.environ.items() if k.startswith("SPAMSIFT_")
                        and k in client.PASSED_ENV}
        if config_path:
            self.own_env["SPAMSIFT_CONFIG"] = config_path
        self.max_request = (settings.max_message_size + FRAME_SLACK
                            if settings.max_message_size else client.MAX_FRAME)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(LISTEN_BACKLOG)
        self.listener.settimeout(0.5)  # how often an idle worker looks whether to stop
        self.stopping = threading.Event()
        self.writer = _Writer(settings)
        self.writer.start()
        self.metrics: Metrics | None = None  # when serving --metrics
        self.workers = [threading.Thread(target=self._work, name=f"spamsift-worker-{n}",
                                         daemon=True)
                        for n in range(max(1, settings.daemon_workers))]

    def serve(self) -> None:
        for worker in self.workers:
            worker.start()
        while not self.stopping.wait(0.5):
            pass
        for worker in self.workers:
            worker.join()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.listener.close()
        self.writer.stop()

    def _work(self) -> None:
        store = None
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                log.error(f"daemon: accept: {exc}", self.settings.syslog)
                self.stopping.wait(0.1)
                continue
            request = _Request(self, conn, store)
            try:
                store = request.handle()
            except Exception as exc:  # noqa: BLE001 - a request must never stop a worker
                log.error(f"daemon: internal error: {type(exc).__name__}: {exc}",
                          self.settings.syslog)
            finally:
                request.close()
                conn.close()
        if store is not None:
            store.close()

    def open_store(self):
        from spamsift.filter.engine.store.base import open_store

        try:
            return open_store(self.settings.storage_url, self.settings.storage_timeout)
        except (SpamsiftError, StorageError):
            return None  # cli.main opens (and reports) one itself


class _Request:
    """One connection: read the request, decide whether this daemon may serve it, filter."""

    def __init__(self, server: _Server, sock: socket.socket, store) -> None:
        self.server = server
        self.sock = sock
        self.store = store
        self.fds: list[int] = []  # homes opened for this request (`_pin`)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def _read(self) -> bytes | None:
        """The request's bytes; None when it is larger than this daemon filters (then read
        to its end and thrown away, so the client can read the answer)."""
        limit = self.server.max_request
        chunks: list[bytes] = []
        total = 0
        # One deadline for the whole request: a timeout per read let a client that sent a
        # byte every 25 s hold a worker for ever.
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not complete within {REQUEST_TIMEOUT:g} s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return b"".join(chunks) if total <= limit else None
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
            else:
                chunks.clear()
                if total > DRAIN_LIMIT:
                    raise ValueError(f"request over {DRAIN_LIMIT} bytes")

    def _decline(self, why: str) -> None:
        self.sock.sendall(client.encode([b"decline", why.encode()]))

    def handle(self):
        """Serve the request; the store to keep for the next one (None: reopen)."""
        sock, server = self.sock, self.server
        sock.settimeout(REQUEST_TIMEOUT)
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            data = self._read()
            if data is None:  # over max_message_size: the client passes it on itself
                self._decline(f"over max_message_size ({server.settings.max_message_size})")
                return self.store
            fields = client.decode(data)
            argc = int(fields[0])
            argv = [f.decode("utf-8", "surrogateescape") for f in fields[1:1 + argc]]
            n_env = int(fields[1 + argc])
            env_fields = fields[2 + argc:2 + argc + 2 * n_env]
            env = {env_fields[i].decode(): env_fields[i + 1].decode("utf-8", "surrogateescape")
                   for i in range(0, len(env_fields), 2)}
            stdin = fields[2 + argc + 2 * n_env]
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
            log.error(f"daemon: bad request: {exc}", server.settings.syslog)
            return self.store
        caller = users.caller_for_uid(uid)
        environ, why = self._environment(argv, env, caller)
        if environ is None:
            self._decline(why)
            return self.store
        out, err = io.BytesIO(), io.StringIO()
        deliveries: list[tuple[list[str], bytes]] = []

        def record_delivery(agent_argv: list[str], message: bytes) -> int:
            # The client runs the agent, as the caller: nothing a request says makes this
            # process run a program.
            deliveries.append((agent_argv, message))
            return exitcodes.OK

        if client.is_training(argv) and not server.writer.sync():
            log.error(f"daemon: the writer did not catch up within {SYNC_WAIT:g} s; a "
                      "report of a message answered just now may not find its signature",
                      server.settings.syslog)
        store = self.store if self.store is not None else server.open_store()
        started = time.perf_counter()
        metrics = server.metrics
        failures: list[BaseException] = []

        def observe(kind: str, label, extra: str = "") -> None:
            if kind == "failed":
                failures.append(label)
            elif metrics is not None:
                metrics.observe(kind, label, extra)
        try:
            code = cli.main(argv, stdin=io.BytesIO(stdin), stdout=out, stderr=err,
                            environ=environ, caller=caller, store=store,
                            commit_inbound=server.writer.submit, run_agent=record_delivery,
                            observe=observe)
        except Exception as exc:  # noqa: BLE001 - a request must never take the daemon down
            log.error(f"daemon: internal error: {type(exc).__name__}: {exc}")
            code, out, deliveries = exitcodes.OK, io.BytesIO(stdin), []
        if store is not None and any(isinstance(e, StorageError)
                                     and not isinstance(e, ConflictError) for e in failures):
            store.close()  # reopen next time: the database may have been replaced
            store = None
        if metrics is not None:
            metrics.request_seconds.observe(time.perf_counter() - started)
        fields = [str(code).encode(), out.getvalue(), err.getvalue().encode("utf-8", "replace")]
        for agent_argv, message in deliveries:
            fields += [b"\0".join(a.encode("utf-8", "surrogateescape") for a in agent_argv),
                       message]
        try:
            sock.sendall(client.encode(fields))
        except OSError:
            pass
        return store

    def _environment(self, argv: list[str], env: dict[str, str],
                     caller) -> tuple[dict | None, str]:
        """(The environment to filter this request with, or None to decline it; why).

        The daemon serves its own configuration only: a request naming another (--config, or
        SPAMSIFT_* variables unlike the daemon's) is declined, and the client filters in its
        own process with its own privileges. A home given by the client (--home, $HOME) is
        looked at only when it belongs to the caller or the caller is trusted (another --home
        is declined, another $HOME left out): the daemon must not tell anyone whether a
        dotfile exists in a folder they cannot read."""
        server = self.server
        if any(a == "--config" or a.startswith("--config=") for a in argv):
            return None, "--config: the daemon serves its own configuration only"
        wanted = {k: v for k, v in env.items() if k.startswith("SPAMSIFT_")}
        if wanted != server.own_env:
            differ = {k for k, _v in set(wanted.items()) ^ set(server.own_env.items())}
            return None, f"another configuration ({', '.join(sorted(differ))})"
        trusted = users.is_trusted(caller, server.settings.trusted_users)
        deliver = client.deliver_set(argv)
        if not trusted and deliver is not None and not deliver & {"spam", "stdout"}:
            # Spam not delivered goes to the quarantine, which the daemon would fill with
            # files of its own for anyone: the caller's own process does it, as the caller.
            return None, "quarantine: only in the caller's own process"
        for n, arg in enumerate(argv):
            name, eq, value = arg.partition("=")
            if name == "--home":
                home = value if eq else (argv[n + 1] if n + 1 < len(argv) else "")
                pinned = self._pin(home, caller.uid, trusted)
                if pinned is None:
                    return None, "--home is not the caller's"
                argv[n if eq else n + 1] = f"--home={pinned}" if eq else pinned
        environ = dict(server.own_env)
        environ.update({k: v for k, v in env.items() if k in ("LOGNAME", "USER")})
        # $HOME (maildrop's) stands for the user's home only when it is the caller's: one
        # that is not is left out, as if unset (the passwd entry or home_template decide).
        if "HOME" in env:
            pinned = self._pin(env["HOME"], caller.uid, trusted)
            if pinned is not None:
                environ["HOME"] = pinned
        return environ, ""

    def _pin(self, home: str, uid: int, trusted: bool) -> str | None:
        """`home` opened once, as /proc/self/fd/N (the opened folder itself, whatever its
        path is made to point at later), when it is the caller's or the caller is trusted;
        else None. Checking the path and then using it let a caller swap a symlink in
        between and learn whether a dotfile exists in a folder they cannot read."""
        if trusted:
            return home
        try:
            fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            if os.fstat(fd).st_uid != uid:
                os.close(fd)
                return None
        except OSError:
            os.close(fd)
            return None
        self.fds.append(fd)
        return f"/proc/self/fd/{fd}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift daemon",
        description="Serve `spamsift filter` requests on a UNIX socket so that each message "
                    "does not pay for starting Python and loading the engine.")
    parser.add_argument("--socket", default=os.environ.get("SPAMSIFT_SOCKET",
                                                           client.DEFAULT_SOCKET),
                        help=f"socket path (default $SPAMSIFT_SOCKET or {client.DEFAULT_SOCKET})")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except SpamsiftError as exc:
        return command_failed("daemon", exc)
    path = args.socket
    if not path:
        print("spamsift daemon: --socket: an empty path", file=sys.stderr)
        return exitcodes.USAGE
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        mode = os.lstat(path).st_mode if os.path.lexists(path) else None
    except OSError as exc:
        print(f"spamsift daemon: {path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    if mode is not None and not stat.S_ISSOCK(mode):
        # Only a stale socket is ours to remove: the path may come from $SPAMSIFT_SOCKET, and
        # the daemon runs as root or the mail user.
        print(f"spamsift daemon: {path} exists and is not a socket; not removing it",
              file=sys.stderr)
        return exitcodes.CONFIG
    if mode is not None:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            print(f"spamsift daemon: another daemon serves {path}", file=sys.stderr)
            return exitcodes.TEMPFAIL
        except OSError:
            os.unlink(path)  # stale: its daemon is gone
        finally:
            probe.close()
    metrics = None
    if args.metrics:
        from spamsift.filter.engine.metrics import Metrics

        try:
            metrics = Metrics(settings.home)
            metrics.serve(args.metrics)
        except (SpamsiftError, OSError) as exc:
            print(f"spamsift daemon: --metrics: {exc}", file=sys.stderr)
            return exitcodes.USAGE if isinstance(exc, SpamsiftError) else exitcodes.CONFIG
    try:
        server = _Server(path, settings, args.config)
    except OSError as exc:
        print(f"spamsift daemon: {path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    try:
        os.chmod(path, 0o666)
    except OSError as exc:
        server.close()
        print(f"spamsift daemon: {path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    server.metrics = metrics
    cli.FAST_EXIT = False

    def stop(_signum, _frame):
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(f"daemon listening on {path}", settings.syslog)
    print(f"spamsift daemon: listening on {path} ({len(server.workers)} workers)",
          file=sys.stderr, flush=True)
    try:
        server.serve()
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass
    return exitcodes.OK
