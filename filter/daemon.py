"""``spamsift daemon``: keep the engine loaded and filter for `spamsift.filter.client` requests.

One thread per connection, one open store per thread (reused: no connect, no WAL recovery,
warm page cache). Each request runs exactly the in-process filter (`spamsift.filter.cli.main`) with the
client's arguments, stdin and the few environment variables it needs, and with the caller
identity the kernel reports for the connecting process (SO_PEERCRED), never one the client
claims. The socket is world-writable on purpose: every local delivery uid must reach it, and
trust is decided from the peer's uid. A client that asks for another configuration than the
daemon's is declined and filters in-process.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading

from spamsift.filter import cli, client
from spamsift.filter.engine import config, exitcodes, log, users
from spamsift.filter.engine.errors import SpamsiftError, StorageError, command_failed


def _write_batches(inbox, storage_url: str, timeout: float, use_syslog: bool,
                   parent: int | None = None) -> None:
    """The writer process: commit queued batches in order until None arrives, or until the
    daemon (`parent`) is gone and nothing is queued any more (a SIGKILLed daemon left it
    behind for ever)."""
    import queue

    from spamsift.filter.engine.store.base import open_store

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    # Learning can wait; replies cannot. On 2 cores the writer's ~10 ms of CPU a message
    # competed with the next client and the daemon (median 26.0 ms before this).
    os.nice(10)
    store = None
    while True:
        try:
            item = inbox.get(timeout=ORPHAN_CHECK)
        except queue.Empty:
            if parent is not None and os.getppid() != parent:
                break
            continue
        if item is None:
            break
        uid, batch = item
        for attempt in range(3):
            try:
                if store is None:
                    store = open_store(storage_url, timeout)
                store.commit(uid, batch)
                break
            except SpamsiftError as exc:
                log.error(f"daemon: writer: {exc} (attempt {attempt + 1})", use_syslog)
                if store is not None:
                    store.close()
                    store = None
    if store is not None:
        store.close()


ORPHAN_CHECK = 5.0   # seconds between the writer's looks at whether the daemon still runs
SUBMIT_WAIT = 10.0   # seconds a reply may wait for room in the writer's queue


class _Writer:
    """Commits what inbound messages learned, in arrival order, off the reply path.

    A TEFT commit is ~10 ms of what a message costs; the client only needs the stamped
    message. The writer is a process of its own: as a thread it held the interpreter lock
    while binding 650 rows and doubled the reply time (6 ms in-process, 14 ms through the
    daemon). If the daemon dies with batches queued, those messages keep their headers but
    were not learned (a later report finds no signature): learning is lost, mail never is.
    The queue is bounded, so a burst slows replies instead of growing memory.
    """

    def __init__(self, settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self._spawn()

    def _spawn(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        # A new queue with each process: one whose reader was killed may hold its read lock.
        self.inbox = context.Queue(maxsize=1000)
        self.process = context.Process(
            target=_write_batches, name="spamsift-writer", daemon=True,
            args=(self.inbox, self.settings.storage_url, self.settings.storage_timeout,
                  self.settings.syslog, os.getpid()))

    def start(self) -> None:
        self.process.start()

    def submit(self, uid: int, batch) -> None:
        """Queue a batch. A writer that died (the OOM killer, say) is replaced, or nothing
        would be learned again and, once the queue was full, every reply would wait; what it
        had queued is lost (those messages keep their headers, their signatures are not
        stored). A queue full for `SUBMIT_WAIT` seconds drops this batch: mail first."""
        import queue

        with self.lock:
            if not self.process.is_alive():
                log.error(f"daemon: the writer process ended (exit {self.process.exitcode}); "
                          "starting a new one: what it had queued was not learned",
                          self.settings.syslog)
                self._spawn()
                self.start()
        try:
            self.inbox.put((uid, batch), timeout=SUBMIT_WAIT)
        except queue.Full:
            log.error(f"daemon: the writer's queue stayed full for {SUBMIT_WAIT:g} s: this "
                      "message was not learned", self.settings.syslog)

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


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, settings, config_path: str | None) -> None:
        self.writer = _Writer(settings)
        self.writer.start()
        self.settings = settings
        self.config_path = config_path
        self.own_env = {k: v for k, v in os.environ.items() if k.startswith("SPAMSIFT_")
                        and k in client.PASSED_ENV}
        if config_path:
            self.own_env["SPAMSIFT_CONFIG"] = config_path
        # Idle stores, reused across requests: ThreadingMixIn starts a thread per request, so
        # a thread-local store would be opened (and its page cache be cold) every time.
        self.idle_stores: list = []
        self.stores_lock = threading.Lock()
        super().__init__(path, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock = self.request
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            fields = client.decode(client.recv_all(sock))
            argc = int(fields[0])
            argv = [f.decode("utf-8", "surrogateescape") for f in fields[1:1 + argc]]
            n_env = int(fields[1 + argc])
            env_fields = fields[2 + argc:2 + argc + 2 * n_env]
            env = {env_fields[i].decode(): env_fields[i + 1].decode("utf-8", "surrogateescape")
                   for i in range(0, len(env_fields), 2)}
            stdin = fields[2 + argc + 2 * n_env]
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
            log.error(f"daemon: bad request: {exc}", self.server.settings.syslog)
            return
        wanted = {k: v for k, v in env.items() if k.startswith("SPAMSIFT_")}
        if wanted != self.server.own_env:
            sock.sendall(client.encode([b"decline"]))
            return
        environ = dict(self.server.own_env)
        environ.update({k: v for k, v in env.items() if k in ("HOME", "LOGNAME", "USER")})
        out, err = io.BytesIO(), io.StringIO()
        with self.server.stores_lock:
            store = self.server.idle_stores.pop() if self.server.idle_stores else None
        if store is None:
            store = self._open_store()
        try:
            code = cli.main(argv, stdin=io.BytesIO(stdin), stdout=out, stderr=err,
                            environ=environ, caller=users.caller_for_uid(uid), store=store,
                            commit_inbound=self.server.writer.submit)
        except Exception as exc:  # noqa: BLE001 - a request must never take the daemon down
            log.error(f"daemon: internal error: {type(exc).__name__}: {exc}")
            code, out = exitcodes.OK, io.BytesIO(stdin)
        if store is not None:
            if "Storage" in err.getvalue() or "Corrupt" in err.getvalue():
                store.close()  # reopen next time: the database may have been replaced
            else:
                with self.server.stores_lock:
                    self.server.idle_stores.append(store)
        try:
            sock.sendall(client.encode([str(code).encode(), out.getvalue(),
                                        err.getvalue().encode("utf-8", "replace")]))
        except OSError:
            pass

    def _open_store(self):
        from spamsift.filter.engine.store.base import open_store

        try:
            settings = config.load(self.server.config_path)
            store = open_store(settings.storage_url, settings.storage_timeout)
        except (SpamsiftError, StorageError):
            return None  # cli.main opens (and reports) one itself
        return store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift daemon",
        description="Serve `spamsift filter` requests on a UNIX socket so that each message "
                    "does not pay for starting Python and loading the engine.")
    parser.add_argument("--socket", default=os.environ.get("SPAMSIFT_SOCKET",
                                                           client.DEFAULT_SOCKET),
                        help=f"socket path (default $SPAMSIFT_SOCKET or {client.DEFAULT_SOCKET})")
    parser.add_argument("--config", help="configuration file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except SpamsiftError as exc:
        return command_failed("daemon", exc)
    path = args.socket
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
    server = _Server(path, settings, args.config)
    os.chmod(path, 0o666)
    cli.FAST_EXIT = False

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(f"daemon listening on {path}", settings.syslog)
    print(f"spamsift daemon: listening on {path}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        server.writer.stop()
        try:
            os.unlink(path)
        except OSError:
            pass
    return exitcodes.OK
