"""How spamsift installs and starts: one import namespace, the launcher, editable installs.

The wheel is built for real (pip, with build isolation), the launcher is run as a process, and
training with helper processes goes through the installed console script, which in CI is
pip's default (PEP 660) editable install: the case where helpers could not import spamsift.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "bin" / "spamsift"
CONSOLE = Path(sys.executable).parent / "spamsift"


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, SPAMSIFT_HOME=str(home))
    env.pop("SPAMSIFT_CONFIG", None)
    env.pop("SPAMSIFT_STORAGE", None)
    env.pop("SPAMSIFT_SOCKET", None)
    return env


def test_the_wheel_holds_nothing_of_ours_at_the_top_but_spamsift(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0 and "Could not find a version" in out.stderr:
        pytest.skip(f"no package index to build with: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr
    # No deprecation banner or other warning from the build of ours (setuptools prints them
    # between !! lines).
    assert "!!" not in out.stderr and "Deprecat" not in out.stderr, out.stderr
    (wheel,) = tmp_path.glob("spamsift-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"spamsift", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}"
                    ".dist-info", f"spamsift-{wheel.name.split('-')[1]}.data"}, tops
    for module in ("filter/cli", "filter/engine/agent", "filter/engine/store/sqlite",
                   "trainer/train", "watchers/cli", "sql/__init__"):
        assert f"spamsift/{module}.py" in names, module
    assert "spamsift/sql/sqlite/schema.sql" in names
    assert "spamsift/sql/mysql/schema.sql" in names


def test_imports_live_under_one_namespace():
    """Nothing of ours is importable at the top level from an installation; the applications
    are spamsift.filter, spamsift.trainer, spamsift.watchers and spamsift.sql."""
    code = ("import importlib.util, sys\n"
            "sys.path = [p for p in sys.path if p not in ('', %r)]\n"
            "import spamsift.filter.cli, spamsift.trainer.train, spamsift.watchers.cli\n"
            "from spamsift import sql\n"
            "print([n for n in ('filter', 'trainer', 'watchers', 'sql') "
            "if importlib.util.find_spec(n) is not None])\n" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _fake_venv(tmp_path: Path, python_mode: int) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nonexistent\n")
    shutil.copy(LAUNCHER, venv / "bin" / "spamsift")
    os.chmod(venv / "bin" / "spamsift", 0o755)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\necho should not run >&2\nexit 1\n")
    os.chmod(python, python_mode)
    os.chmod(tmp_path, 0o755)
    return venv


def test_launcher_tempfails_in_one_line_when_the_venv_python_cannot_run(tmp_path):
    venv = _fake_venv(tmp_path, 0o644)
    out = subprocess.run([str(venv / "bin" / "spamsift"), "filter", "--user", "alice"],
                         input=b"Subject: x\n\nhi\n", capture_output=True, timeout=30)
    assert out.returncode == 75
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"spamsift: cannot execute {venv}/bin/"
                                                   "python as uid"), lines
    assert out.stdout == b""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run as another user")
def test_launcher_tempfails_for_a_delivery_uid_that_cannot_run_roots_python():
    """The venv's python is there, executable by root alone (a venv on a Python under
    /root): a delivery uid gets one line and 75, not another python3's ModuleNotFoundError."""
    import tempfile

    # Not pytest's tmp_path: its parents are root's alone.
    top = Path(tempfile.mkdtemp(prefix="spamsift-launcher-"))
    try:
        venv = _fake_venv(top, 0o700)
        out = subprocess.run([str(venv / "bin" / "spamsift"), "filter", "--user", "nobody"],
                             input=b"Subject: x\n\nhi\n", capture_output=True, timeout=30,
                             user="nobody", cwd="/")
    finally:
        shutil.rmtree(top)
    assert out.returncode == 75, out.stderr
    assert out.stderr.decode().splitlines() == [
        f"spamsift: cannot execute {venv}/bin/python as uid {_uid('nobody')}: install spamsift "
        "with a Python every user that runs it can execute (README.md, Install)"]


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def test_ps_shows_a_short_command_line_and_the_name_spamsift(tmp_path):
    if not CONSOLE.exists():
        pytest.skip("spamsift console script not installed")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen([str(CONSOLE), "filter", "--user", "alice", "--stdout"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(home))
    try:
        cmdline = comm = ""
        for _ in range(500):  # until the shell has exec'd Python and Python has named itself
            try:
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
                comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
            except OSError:
                break
            if comm == "spamsift":
                break
            time.sleep(0.01)
    finally:
        proc.communicate(b"Subject: x\n\nhi\n", timeout=60)
    args = cmdline.rstrip("\0").split("\0")
    assert comm == "spamsift"
    assert "import" not in cmdline and len(cmdline) < 300, args
    assert args[-5:] == [str(CONSOLE), "filter", "--user", "alice", "--stdout"], args


def test_train_with_a_helper_runs_from_this_installation(tmp_path):
    """`spamsift train --jobs 1` through the console script: under pip's default editable
    install a helper started with the launcher's -I -S could not import spamsift and printed
    a ModuleNotFoundError traceback."""
    if not CONSOLE.exists():
        pytest.skip("spamsift console script not installed")
    import random

    sys.path.insert(0, str(ROOT / "examples" / "demo"))
    import make_corpus

    rng = random.Random(7)
    for label, spam in (("spam", True), ("ham", False)):
        folder = tmp_path / label
        folder.mkdir()
        for k in range(600):  # more than one 500-message chunk: the helper must run
            (folder / f"{k}.eml").write_bytes(make_corpus.message(rng, spam, k))
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run([str(CONSOLE), "train", "--user", "u", "--quiet", "--jobs", "1",
                          "--spam", str(tmp_path / "spam"), "--ham", str(tmp_path / "ham")],
                         capture_output=True, env=_env(home), timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stderr == b""
    assert stat.S_ISREG(os.stat(home / "spamsift.db").st_mode)
