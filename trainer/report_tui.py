"""``spamsift report --watch``: the live terminal UI, re-read every ``--interval`` seconds.

`View` is the screen's state (sort, filters, scroll position) as a pure object changed by
keys, so the key handling is tested without a terminal; `run` owns the terminal: cbreak mode
(Ctrl-C still interrupts), rich's alternate screen, a select() on stdin and on the `Loader`
thread that re-reads the store. Only one page of rows is rendered, whatever the number of
users: with 10,000 users a frame costs the sort and one screenful, not 10,000 rows of layout.
"""

from __future__ import annotations

import os
import sys
import time

from spamsift.filter.engine import exitcodes
from spamsift.filter.engine.errors import UsageError
from spamsift.trainer import report_data
from spamsift.trainer.report_data import SORTS, Report, UserRow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.text import Text

# key -> sort it selects
SORT_KEYS = {"a": "accuracy", "f": "fp", "n": "name", "m": "messages", "t": "training",
             "l": "last-error"}
# Escape sequences of the keys that move (xterm and tmux send these).
SEQUENCES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[5~": "pgup", "\x1b[6~": "pgdn",
             "\x1b[H": "home", "\x1b[F": "end", "\x1b[1~": "home", "\x1b[4~": "end",
             "\x1bOA": "up", "\x1bOB": "down", "\x1bOH": "home", "\x1bOF": "end"}


class View:
    """What the watch screen shows; `key` applies one key press."""

    def __init__(self, sort: str = "name", reverse: bool = False, domain: str | None = None,
                 match: str = "", below: float | None = None, min_messages: int = 0) -> None:
        self.sort = sort
        self.reverse = reverse
        self.domain = domain
        self.match = match
        self.below = below
        self.min_messages = min_messages
        self.offset = 0
        self.typing: str | None = None  # the filter being typed after "/", else None
        self.page = 10                  # rows per screen, set by the renderer
        self.total = 0                  # rows after filtering, set by `rows`

    def rows(self, report: Report) -> list[UserRow]:
        rows = report_data.filter_rows(report.rows, self.domain, self.match or None,
                                       self.below, self.min_messages)
        rows = report_data.sort_rows(rows, self.sort, self.reverse)
        self.total = len(rows)
        self.offset = max(0, min(self.offset, self.total - self.page))
        return rows

    def key(self, key: str, domains: list[str]) -> bool:
        """Apply one key (a character or a name from `SEQUENCES`); False means quit."""
        if self.typing is not None:
            if key in ("\r", "\n"):
                self.match, self.typing, self.offset = self.typing, None, 0
            elif key == "\x1b":
                self.typing = None
            elif key in ("\x7f", "\b"):
                self.typing = self.typing[:-1]
            elif len(key) == 1 and key.isprintable():
                self.typing += key
            return True
        if key in ("q", "Q", "\x03"):
            return False
        if key in SORT_KEYS:
            self.sort, self.offset = SORT_KEYS[key], 0
        elif key == "s":
            names = list(SORTS)
            self.sort, self.offset = names[(names.index(self.sort) + 1) % len(names)], 0
        elif key == "r":
            self.reverse, self.offset = not self.reverse, 0
        elif key == "/":
            self.typing = ""
        elif key == "d" and domains:
            at = domains.index(self.domain) + 1 if self.domain in domains else 0
            self.domain, self.offset = domains[at % len(domains)], 0
        elif key == "c":
            self.domain, self.match, self.below, self.min_messages = None, "", None, 0
            self.offset = 0
        elif key in ("down", "j"):
            self.offset += 1
        elif key in ("up", "k"):
            self.offset -= 1
        elif key in ("pgdn", " "):
            self.offset += self.page
        elif key == "pgup":
            self.offset -= self.page
        elif key in ("home", "g"):
            self.offset = 0
        elif key in ("end", "G"):
            self.offset = self.total
        self.offset = max(0, min(self.offset, self.total - self.page))
        return True

    def title(self, shown: int) -> str:
        parts = [f"{self.total} user" + ("" if self.total == 1 else "s"), "by " + SORTS[self.sort]
                 + (" (reversed)" if self.reverse else "")]
        if self.domain is not None:
            parts.append("domain " + (self.domain or "(local)"))
        if self.match:
            parts.append(f"matching {self.match!r}")
        if self.below is not None:
            parts.append(f"accuracy under {self.below:g} %")
        if self.total > shown:
            parts.append(f"rows {self.offset + 1}-{self.offset + shown}")
        return ", ".join(parts)


def split_keys(data: str) -> list[str]:
    """Key presses in a chunk read from the terminal (escape sequences kept whole)."""
    keys, i = [], 0
    while i < len(data):
        if data[i] == "\x1b":
            for seq, name in SEQUENCES.items():
                if data.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                keys.append("\x1b")
                i += 1
        else:
            keys.append(data[i])
            i += 1
    return keys


def footer(view: View, refreshed: float, problem: str = "") -> Text:
    from rich.text import Text

    if view.typing is not None:
        return Text(f"filter (name or @domain): {view.typing}_   Enter apply, Esc cancel",
                    style="reverse")
    when = time.strftime("%H:%M:%S", time.localtime(refreshed))
    if problem:
        return Text(f"q quit  {problem} (showing what was read at {when})",
                    style="reverse red", no_wrap=True, overflow="ellipsis")
    return Text(f"q quit  a accuracy  f false pos.  n name  m messages  t training  "
                f"l last error  s next  r reverse  / filter  d domain  c clear  u update  "
                f"(read {when})", style="reverse", no_wrap=True, overflow="ellipsis")


class Loader:
    """Re-reads the report in a thread of its own, so keys are answered while a large
    database is being read (10,000 users on MariaDB: 2 s). Each result, or the one-line text
    of a storage error, is handed over through `results`; a byte on a pipe wakes the screen."""

    def __init__(self, load: Callable[[bool], Report], interval: float) -> None:
        import queue
        import threading

        self.load = load
        self.interval = interval
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        self.now = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="report-loader", daemon=True)

    def _run(self) -> None:
        from spamsift.filter.engine.errors import SpamsiftError

        while not self.stop.is_set():
            try:
                self.results.put(self.load(True))
            except SpamsiftError as exc:
                self.results.put(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            try:
                os.write(self.wake_w, b"!")
            except OSError:
                return
            self.now.wait(self.interval)
            self.now.clear()

    def close(self) -> None:
        self.stop.set()
        self.now.set()
        self.thread.join(timeout=1.0)  # a load in progress is abandoned (daemon thread)
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)


def run(load: Callable[[bool], Report], args, console: Console | None = None) -> int:
    """Show the live report until q (or Ctrl-C); `load(history)` reads the store.

    The first screen comes from the counters alone (one quick query); the history, and with
    it the trends and last errors, follows from the `Loader` a moment later."""
    import queue
    import select
    import termios
    import tty

    from rich.console import Console
    from rich.live import Live

    from spamsift.trainer import report_render

    fd = sys.stdin.fileno()
    if not os.isatty(fd) or not sys.stdout.isatty():
        raise UsageError("--watch needs a terminal (use --json or --csv for scripts)")
    console = console or Console()
    view = View(args.sort, args.reverse, args.domain, args.match or "", args.below,
                args.min_messages)
    report, refreshed, problem = load(False), time.time(), ""
    loader = Loader(load, args.interval)
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            loader.thread.start()
            while True:
                width, height = console.size
                view.page = report_render.page_size(height)
                rows = view.rows(report)
                shown = min(view.page, max(0, view.total - view.offset))
                live.update(report_render.render_screen(
                    report, rows, width, height, view.title(shown),
                    footer(view, refreshed, problem), view.offset), refresh=True)
                ready, _w, _x = select.select([fd, loader.wake_r], [], [])
                if loader.wake_r in ready:
                    os.read(loader.wake_r, 64)
                    while True:
                        try:
                            got = loader.results.get_nowait()
                        except queue.Empty:
                            break
                        if isinstance(got, str):
                            problem = got
                        else:
                            report, refreshed, problem = got, time.time(), ""
                if fd in ready:
                    data = os.read(fd, 256).decode("utf-8", "replace")
                    domains = report_data.domains(report.rows)
                    for key in split_keys(data):
                        if key == "u" and view.typing is None:
                            loader.now.set()
                        elif not view.key(key, domains):
                            return exitcodes.OK
    except KeyboardInterrupt:
        return exitcodes.OK
    finally:
        loader.close()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
