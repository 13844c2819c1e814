"""Golden files for header stamping: ``messages/golden/NAME.eml`` -> ``golden/NAME.out``.

Each input (all synthetic) runs through ``spamsift.filter.cli.main`` in-process with a fresh SQLite
home, a fixed clock and a fixed signature id, and the output must equal the golden file byte for
byte.  The rule every golden file was checked against by hand (``filter/engine/message.py``):
the output is the input with its ``X-DSPAM-*`` header lines (with their continuation lines)
removed and our header lines added at the end of the header block, with the message's own
line ending -- every other byte identical.  Subject tagging additionally prefixes Subject.

``X-DSPAM-Processed`` is ``time.ctime`` of the clock, in local time: the tests run with
``TZ=UTC`` so the golden files do not depend on the machine's zone.

Regenerate after an intended change with ``SPAMSIFT_REGEN_GOLDEN=1 pytest tests/test_golden.py``,
then read every changed ``.out`` file (``git diff tests/golden``) before committing it.  Cases
in `KNOWN_BUGS` are never regenerated: their ``.out`` files were written by hand with the
correct output, and the test is an xfail until spamsift is fixed.

`test_stamping_property` checks the rule itself on every golden input, independently of the
``.out`` files: removing the X-DSPAM header lines from output and input leaves equal bytes.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mangle  # noqa: E402

from spamsift.filter.cli import main  # noqa: E402

TESTS = Path(__file__).resolve().parent
INPUTS = TESTS / "messages" / "golden"
OUTPUTS = TESTS / "golden"
CLOCK = 1700000000.0
SIGNATURE = "0123456789abcdef0123456789abcd"
ARGV = ["--user", "alice", "--stdout", "--deliver=innocent,spam"]
REGEN = os.environ.get("SPAMSIFT_REGEN_GOLDEN") == "1"

SUBJECT_TAG = {"config": "subject_tag = true\n", "train": True}
# name -> how it runs; names not listed run with the plain ARGV and no configuration file.
CASES: dict[str, dict] = {
    "factors_lf": {"argv": ["--factors"]},
    "factors_crlf": {"argv": ["--factors"]},
    "subject_tag": SUBJECT_TAG,
    "subject_tag_missing_crlf": SUBJECT_TAG,
    "subject_tag_already": SUBJECT_TAG,
    "subject_tag_innocent": SUBJECT_TAG,
}
# name -> why the current output is wrong; the .out file holds the correct output.
KNOWN_BUGS: dict[str, str] = {}

# Synthetic training mail for the subject-tag cases: they need a spam verdict.
TRAIN_SPAM = b"""From: Pill Shop <offers@pills.example.com>
To: someone@example.net
Subject: Cheap pills, limited offer

Buy cheap pills now! Limited offer, viagra cialis discount pharmacy.
Click here to claim your free prize: http://pills.example.com/offer
Act now, winner, guaranteed lowest price, no prescription needed.
"""
TRAIN_HAM = b"""From: Colleague <colleague@example.org>
To: someone@example.net
Subject: Project status

The project review is on Monday. Please send the status report and the
minutes of the last meeting before then. Thanks, see you at the office.
"""


def golden_names() -> list[str]:
    return sorted(p.stem for p in INPUTS.glob("*.eml"))


@pytest.fixture
def utc():
    """Local time = UTC for the duration of a test (X-DSPAM-Processed uses time.ctime)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def run_filter(raw: bytes, home: Path, argv: list[str] = (), config: str | None = None,
               train: bool = False) -> tuple[int, bytes, str]:
    """(exit code, stdout bytes, stderr text) of ``spamsift filter`` run in-process."""
    home.mkdir(parents=True, exist_ok=True)
    environ = {"SPAMSIFT_HOME": str(home)}
    config = config or ""
    if os.getuid() != 0:  # "alice" needs a trusted caller
        import pwd

        config += f"trusted_users = [{pwd.getpwuid(os.getuid()).pw_name!r}]\n"
    if config:
        path = home / "spamsift.toml"
        path.write_text(config)
        environ["SPAMSIFT_CONFIG"] = str(path)
    if train:
        ids = iter(range(10**6))
        for sample, klass in [(TRAIN_SPAM, "spam"), (TRAIN_HAM, "innocent")] * 5:
            err = io.StringIO()
            rc = main(["--user", "alice", f"--class={klass}", "--source=corpus"],
                      stdin=io.BytesIO(sample), stdout=io.BytesIO(), stderr=err,
                      environ=environ, clock=lambda: CLOCK,
                      make_id=lambda: f"{next(ids):030x}")
            assert rc == 0, f"training failed ({rc}): {err.getvalue()}"
    out, err = io.BytesIO(), io.StringIO()
    rc = main([*ARGV, *argv], stdin=io.BytesIO(raw), stdout=out, stderr=err, environ=environ,
              clock=lambda: CLOCK, make_id=lambda: SIGNATURE)
    return rc, out.getvalue(), err.getvalue()


def _diff(want: bytes, got: bytes) -> str:
    import difflib

    lines = difflib.unified_diff([repr(x) for x in mangle.split_lines(want)],
                                 [repr(x) for x in mangle.split_lines(got)],
                                 "expected", "actual", lineterm="", n=2)
    return "\n".join(list(lines)[:80])


def _params():
    for name in golden_names():
        marks = []
        if name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=True))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_golden(name: str, tmp_path: Path, utc):
    case = CASES.get(name, {})
    raw = (INPUTS / f"{name}.eml").read_bytes()
    rc, out, err = run_filter(raw, tmp_path / "home", case.get("argv", []),
                              case.get("config"), case.get("train", False))
    assert rc == 0, err
    assert "passed through" not in err, err
    golden = OUTPUTS / f"{name}.out"
    if REGEN and name not in KNOWN_BUGS:
        OUTPUTS.mkdir(exist_ok=True)
        golden.write_bytes(out)
        pytest.skip(f"regenerated {golden.name}: read it before committing")
    assert golden.exists(), f"no {golden}: run with SPAMSIFT_REGEN_GOLDEN=1 and check it"
    want = golden.read_bytes()
    assert out == want, f"{name}: output differs from {golden.name}:\n{_diff(want, out)}"


def test_every_golden_input_has_an_output():
    missing = [n for n in golden_names() if not (OUTPUTS / f"{n}.out").exists()]
    orphans = sorted(p.stem for p in OUTPUTS.glob("*.out") if p.stem not in golden_names())
    assert not missing and not orphans, f"missing: {missing}, without input: {orphans}"
    assert set(CASES) <= set(golden_names()) and set(KNOWN_BUGS) <= set(golden_names())


@pytest.mark.parametrize("factors", [False, True], ids=["plain", "factors"])
@pytest.mark.parametrize("name", golden_names())
def test_stamping_property(name: str, factors: bool, tmp_path: Path):
    """Output minus our X-DSPAM lines == input minus its incoming X-DSPAM lines."""
    raw = (INPUTS / f"{name}.eml").read_bytes()
    rc, out, err = run_filter(raw, tmp_path / "home", ["--factors"] if factors else [])
    assert rc == 0 and "passed through" not in err, err
    want, got = mangle.remove_ours(raw), mangle.remove_ours(out)
    if name in KNOWN_BUGS and want != got:
        pytest.xfail(KNOWN_BUGS[name])
    assert got == want, f"{name}:\n{_diff(want, got)}"
    verdict, why = mangle.check_stamped(raw, out)
    assert verdict == "stamped", why
    names = [mangle.header_name([h]) for h in mangle.our_headers(out)]
    expected = [b"x-dspam-result", b"x-dspam-processed", b"x-dspam-confidence",
                b"x-dspam-probability", b"x-dspam-score",
                *([b"x-dspam-unsure"] if b"\nX-DSPAM-Unsure: yes" in out else []),
                b"x-dspam-signature"]
    assert names == expected + ([b"x-dspam-factors"] if factors else [])


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c is SUBJECT_TAG))
def test_subject_tag_changes_only_the_subject(name: str, tmp_path: Path):
    raw = (INPUTS / f"{name}.eml").read_bytes()
    rc, out, err = run_filter(raw, tmp_path / "home", config=SUBJECT_TAG["config"], train=True)
    assert rc == 0, err
    want, got = mangle.remove_ours(raw), mangle.remove_ours(out)
    spam = b"X-DSPAM-Result: Spam" in out
    assert spam == (name != "subject_tag_innocent"), out
    if spam and b"\nSubject: [SPAM]" not in b"\n" + raw:
        subjects = [h for h in mangle.header_block(raw)[0] if mangle.header_name(h) == b"subject"]
        if subjects:
            line = b"".join(subjects[0])
            tagged = b"Subject: [SPAM] " + line[len(b"Subject:"):].lstrip(b" \t")
            want = want.replace(line, tagged, 1)
        else:  # a Subject is added with our headers
            added = b"Subject: [SPAM]" + mangle.eol_of(raw)
            assert added in got
            got = got.replace(added, b"", 1)
    assert got == want, _diff(want, got)


def test_processed_is_local_ctime(tmp_path: Path):
    raw = (INPUTS / "lf_basic.eml").read_bytes()
    rc, out, _ = run_filter(raw, tmp_path / "home")
    assert rc == 0
    assert f"X-DSPAM-Processed: {time.ctime(CLOCK)}\n".encode() in out
