"""`spamsift report --watch` in a real terminal: tmux runs it, send-keys sorts and filters,
capture-pane reads the screen. The database is `test_report`'s scenario, built by the real
filter with today as its last day, so the trend shows too.

Needs tmux (skips without it, fails under SPAMSIFT_REQUIRE_SERVERS=1). The tmux server is a
private one (``-L``), killed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import need
from test_report import HAM, HAM_IP, NAMES, SPAM, SPAM_IP, build

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
COLUMNS, LINES = 150, 30


class Terminal:
    """One tmux session on a private server."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.socket = "spamsift-test-" + uuid.uuid4().hex[:8]
        self.env = env
        self.tmux("new-session", "-d", "-s", "report", "-x", str(COLUMNS), "-y", str(LINES),
                  command)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], env=self.env,
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "report")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "report", *keys)

    def wait_for(self, what, timeout: float = 15.0) -> str:
        """The screen once `what` (text, or a predicate on the screen) holds."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if (what in screen) if isinstance(what, str) else what(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what!r}; the screen:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)


def users_on(screen: str) -> list[str]:
    """The user names of the table's lines, top to bottom."""
    return [line.split()[0] for line in screen.splitlines()
            if line.split() and line.split()[0] in NAMES]


def row_of(screen: str, name: str) -> list[str]:
    return next(line.split() for line in screen.splitlines()
                if line.split() and line.split()[0] == name)


@pytest.fixture
def terminal(tmp_path):
    if shutil.which("tmux") is None:
        need("tmux is not installed")
    url = f"sqlite://{tmp_path}/spamsift.db"
    builder = build(url, str(tmp_path), now=time.time())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "SPAMSIFT_HOME": str(tmp_path), "SPAMSIFT_STORAGE": url,
           "SPAMSIFT_CONFIG": "", "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    command = (f"{SPAMSIFT} report --watch --interval 0.5; "
               "echo \"report exited with $?\"; sleep 60")
    term = Terminal(command, env)
    term.builder = builder  # type: ignore[attr-defined]
    try:
        yield term
    finally:
        term.close()


def test_watch_sorts_filters_and_refreshes(terminal):
    # The first screen may come from the counters alone; the history follows.
    screen = terminal.wait_for(lambda s: "q quit" in s and "Messages today" in s)
    assert users_on(screen) == list(NAMES)
    assert "Users 4  opted in 3  mature 0" in screen
    alice = row_of(screen, "alice@example.com")
    assert alice[1:10] == ["6", "6", "1", "1", "12/12", "85.71", "14.29", "85.71", "2481"]
    assert alice[-1].endswith("██▁")  # the trend: D-2 and D-1 clean, D two errors in four

    terminal.keys("a")  # worst accuracy first; no mail at all last
    screen = terminal.wait_for("by worst accuracy first")
    assert users_on(screen) == ["carol@example.org", "alice@example.com", "bob@example.com",
                                "dave"]
    terminal.keys("r")
    screen = terminal.wait_for("(reversed)")
    assert users_on(screen)[0] == "bob@example.com"

    terminal.keys("f")  # most false positives first (and no longer reversed? r stays)
    screen = terminal.wait_for("by most false positives first")
    assert users_on(screen)[-1] == "alice@example.com"  # reversed: the most FP last
    terminal.keys("r")
    screen = terminal.wait_for(lambda s: "by most false positives first" in s
                               and "(reversed)" not in s)
    assert users_on(screen)[0] == "alice@example.com"

    terminal.keys("/", "example.org")
    terminal.wait_for("filter (name or @domain): example.org_")
    terminal.keys("Enter")
    screen = terminal.wait_for("matching 'example.org'")
    assert users_on(screen) == ["carol@example.org"]
    assert "1 user, by" in screen

    terminal.keys("c", "n", "d")  # clear, by name, then the domain with the most users
    screen = terminal.wait_for("domain example.com")
    assert users_on(screen) == ["alice@example.com", "bob@example.com"]
    terminal.keys("d")
    screen = terminal.wait_for("domain (local)")
    assert users_on(screen) == ["dave"]
    terminal.keys("c")
    screen = terminal.wait_for(lambda s: len(users_on(s)) == 4)

    # New mail is shown at the next refresh (--interval 0.5).
    builder = terminal.builder
    builder.inbound(3, "bob@example.com", SPAM, SPAM_IP, "Spam")
    builder.inbound(3, "bob@example.com", HAM, HAM_IP, "Innocent")
    screen = terminal.wait_for(lambda s: row_of(s, "bob@example.com")[1:3] == ["3", "3"])
    assert "Messages today 7 " in screen

    terminal.keys("q")
    terminal.wait_for("report exited with 0")


def test_watch_scrolls_a_long_list(tmp_path):
    """More users than lines: the page moves with the keys and says which rows it shows."""
    if shutil.which("tmux") is None:
        need("tmux is not installed")
    from spamsift.filter.engine.store.base import Batch, open_store

    url = f"sqlite://{tmp_path}/spamsift.db"
    store = open_store(url)
    for i in range(60):
        batch = Batch(time.strftime("%Y-%m-%d"))
        batch.add_stat("spam_learned", i + 1)
        store.commit(store.uid(f"u{i:02d}"), batch)
    store.close()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPAMSIFT_HOME": str(tmp_path),
           "SPAMSIFT_STORAGE": url, "SPAMSIFT_CONFIG": "", "LANG": "C.UTF-8"}
    term = Terminal(f"{SPAMSIFT} report --watch; sleep 60", env)
    try:
        page = LINES - 9  # summary 4, title, header, rule, key line, one spare
        screen = term.wait_for("q quit")
        assert f"60 users, by user name, rows 1-{page}" in screen
        names = [line.split()[0] for line in screen.splitlines() if line.startswith("u")]
        assert names == [f"u{i:02d}" for i in range(page)]
        term.keys("PageDown")
        screen = term.wait_for(f"rows {page + 1}-{2 * page}")
        assert [line.split()[0] for line in screen.splitlines()
                if line.startswith("u")][0] == f"u{page:02d}"
        term.keys("End")
        screen = term.wait_for(f"rows {60 - page + 1}-60")
        term.keys("m")  # most messages first: u59 has 60
        screen = term.wait_for("by most messages first, rows 1-")
        assert [line.split()[0] for line in screen.splitlines()
                if line.startswith("u")][0] == "u59"
    finally:
        term.close()
