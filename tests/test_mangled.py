"""1,000 mangled messages through the real ``spamsift filter``: never crash, never alter bytes.

`mangle.generate` builds the messages from synthetic seeds with a fixed seed (truncated MIME,
bad base64, NULs, a 1 MB line, broken charsets, deep nesting, broken boundaries, garbage,
CRLF/LF mixtures, lone CRs, huge headers, malformed header lines, spoofed X-DSPAM headers).
Each one runs through the installed command as a subprocess -- two at a time, sharing one
SQLite home, so the database locking is exercised too -- with
``--user fuzz --stdout --deliver=innocent,spam``, and must:

* exit 0 within `TIMEOUT` seconds (`CRASHER_TIMEOUT` for the crashers), without "Traceback"
  on stderr;
* come back either unchanged or with only our X-DSPAM lines added (`mangle.check_stamped`);
* not be passed through because of an internal error (the failure policy hides crashes as
  a log line plus the unchanged message; that log line is what this looks for).

At least 95% must actually be stamped, so a filter that silently gives up fails.

Every failing input is written out (named by its hash) to a temporary folder named in the
failure, or with SPAMSIFT_SAVE_CRASHERS=1 to ``tests/crashers/``, where `test_crasher` runs
every file with the same checks, so a bug once found stays covered.  ``python tests/mangle.py DIR``
writes the 1,000 messages out for a look.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mangle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CRASHERS = REPO / "tests" / "crashers"
ARGS = ["filter", "--user", "fuzz", "--stdout", "--deliver=innocent,spam"]
TIMEOUT = 20.0          # seconds per mangled message; the 1 MB ones take about 1-2 s
CRASHER_TIMEOUT = 5.0   # crashers are small: a few KB take well under a second
WORKERS = 2
MIN_STAMPED = 0.95


def spamsift_command() -> list[str]:
    """The installed ``spamsift`` command (the venv's), else the module run by this Python."""
    venv_bin = REPO / ".venv" / "bin"
    for candidate in (Path(sys.executable).parent / "spamsift", venv_bin / "spamsift"):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("spamsift")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from spamsift.main import main; sys.exit(main())"]


def make_home(folder: Path) -> dict[str, str]:
    """A SPAMSIFT_HOME and config in `folder`; the environment for running the filter."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    config = folder / "spamsift.toml"
    config.write_text("max_message_size = 2000000\nsyslog = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_HOME=str(home), SPAMSIFT_CONFIG=str(config))
    env.pop("HOME", None)  # no dotfiles of whoever runs the tests
    return env


class Run:
    __slots__ = ("name", "data", "rc", "out", "err", "seconds", "verdict", "problems")

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.rc: int | None = None
        self.out = b""
        self.err = ""
        self.seconds = 0.0
        self.verdict = ""
        self.problems: list[str] = []


def run_filter(name: str, data: bytes, env: dict[str, str], timeout: float = TIMEOUT) -> Run:
    """Run one message through the real filter and check it; `Run.problems` lists failures."""
    run = Run(name, data)
    started = time.monotonic()
    try:
        done = subprocess.run(spamsift_command() + ARGS, input=data, capture_output=True,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        run.seconds = time.monotonic() - started
        run.verdict = "timeout"
        run.problems.append(f"no answer within {timeout:.0f} s")
        return run
    run.seconds = time.monotonic() - started
    run.rc, run.out = done.returncode, done.stdout
    run.err = done.stderr.decode("utf-8", "replace")
    if run.rc != 0:
        run.problems.append(f"exit code {run.rc}")
    if "Traceback" in run.err:
        run.problems.append("Traceback on stderr")
    run.verdict, why = mangle.check_stamped(data, run.out)
    if run.verdict == "wrong":
        run.problems.append(f"wrong bytes: {why}")
    elif run.verdict == "passed" and "passed through unchanged" in run.err:
        run.problems.append("internal error, message passed through: " + run.err.strip()[:300])
    return run


def save_crasher(data: bytes) -> Path | None:
    """Keep a failing input: in tests/crashers/ when SPAMSIFT_SAVE_CRASHERS=1 (a developer
    adding it to the suite), else in a folder of the run's own (a test run never writes into
    the checkout). The path goes into the failure message."""
    import tempfile

    name = f"fuzz-{hashlib.sha1(data).hexdigest()[:16]}.eml"
    if os.environ.get("SPAMSIFT_SAVE_CRASHERS") == "1":
        CRASHERS.mkdir(parents=True, exist_ok=True)
        path = CRASHERS / name
    else:
        path = Path(tempfile.gettempdir()) / "spamsift-crashers" / name
        path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return path


def _report(runs: list[Run]) -> str:
    lines = []
    for run in runs[:25]:
        saved = save_crasher(run.data)
        where = f" -> {saved.relative_to(REPO)}" if saved else ""
        lines.append(f"{run.name} ({len(run.data)} bytes){where}: {'; '.join(run.problems)}")
    for run in runs[25:]:
        save_crasher(run.data)
    if len(runs) > 25:
        lines.append(f"... and {len(runs) - 25} more")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_runs(tmp_path_factory, request) -> list[Run]:
    env = make_home(tmp_path_factory.mktemp("fuzz"))
    messages = mangle.generate()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        runs = list(pool.map(lambda item: run_filter(item[0], item[1], env), messages))
    stamped = sum(r.verdict == "stamped" for r in runs)
    passed = sum(r.verdict == "passed" for r in runs)
    other = len(runs) - stamped - passed
    slowest = max(runs, key=lambda r: r.seconds)
    summary = (f"mangled: {len(runs)} messages, {stamped} stamped, {passed} passed through, "
               f"{other} wrong/timeout; slowest {slowest.seconds:.1f} s ({slowest.name})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # shown even when output is captured
        reporter.write_line("")
        reporter.write_line(summary)
    else:
        print(summary)
    return runs


def test_mangled_exit_zero_and_bytes_exact(fuzz_runs):
    bad = [r for r in fuzz_runs if any(not p.startswith("internal error") for p in r.problems)]
    assert not bad, f"{len(bad)} of {len(fuzz_runs)} mangled messages failed:\n{_report(bad)}"


def test_mangled_no_internal_errors(fuzz_runs):
    """A message passed through because spamsift raised is a crash the failure policy hid."""
    bad = [r for r in fuzz_runs if any(p.startswith("internal error") for p in r.problems)]
    assert not bad, (f"{len(bad)} of {len(fuzz_runs)} mangled messages hit an internal error:\n"
                     f"{_report(bad)}")


def test_mangled_mostly_stamped(fuzz_runs):
    stamped = sum(r.verdict == "stamped" for r in fuzz_runs)
    assert stamped >= MIN_STAMPED * len(fuzz_runs), (
        f"only {stamped} of {len(fuzz_runs)} mangled messages were stamped; the rest were "
        f"passed through or failed")


def test_mangled_corpus_is_deterministic():
    assert mangle.generate(20) == mangle.generate(20)
    assert len(mangle.generate()) == mangle.COUNT


def _crasher_files() -> list[Path]:
    if not CRASHERS.is_dir():
        return []
    return sorted(p for p in CRASHERS.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix != ".md")


@pytest.fixture(scope="module")
def crasher_env(tmp_path_factory) -> dict[str, str]:
    return make_home(tmp_path_factory.mktemp("crashers"))


@pytest.mark.parametrize("path", _crasher_files(), ids=lambda p: p.name)
def test_crasher(path: Path, crasher_env):
    """Every input that once crashed spamsift or came back altered: must now be fine."""
    run = run_filter(path.name, path.read_bytes(), crasher_env, timeout=CRASHER_TIMEOUT)
    assert not run.problems, f"{path.name}: {'; '.join(run.problems)}\nstderr: {run.err[:2000]}"
