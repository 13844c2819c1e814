"""Hostile messages within the default 4 MB limit, for the attack tests and benchmarks/hostile.py.

Each is built from a seed, so a failure can be reproduced; none is corpus mail. They are what
an attacker who can send mail to a spamsift user controls: the number and size of words,
headers and MIME parts, and how deep parts nest.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

from procs import peak_mb

LIMIT = 4 * 1024 * 1024  # max_message_size's default
SIZE = LIMIT - 64 * 1024  # what the generators aim at: inside the limit, headers included
_HEAD = (b"From: Mallory <m@attacker.example>\nTo: alice@example.org\n"
         b"Subject: hostile\nMessage-ID: <h@attacker.example>\n")


def _fill(words, size: int) -> bytes:
    out, total = [], 0
    for w in words:
        out.append(w)
        total += len(w) + 1
        if total >= size:
            break
    return b" ".join(out)


def unique_words(size: int = SIZE, seed: int = 1) -> bytes:
    """A body of random 6-letter words: nearly every one a new token (1.48 M token rows)."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz"

    def words():
        while True:
            yield bytes(rng.choices(letters, k=6))
    body = _fill(words(), size * 76 // 77)  # room for the line breaks
    # Lines of ~76 characters, as mail has.
    lines = [body[i:i + 76] for i in range(0, len(body), 76)]
    return _HEAD + b"\n" + b"\n".join(lines) + b"\n"


def many_received(count: int = 60000, seed: int = 1) -> bytes:
    """`count` Received headers, each with other hosts and addresses (~70 bytes each)."""
    rng = random.Random(seed)
    lines = []
    for k in range(count):
        a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(256)
        lines.append(b"Received: from h%d.example (10.%d.%d.%d) by mx%d id q%x\n"
                     % (k, a, b, c, k % 7, rng.getrandbits(40)))
    return b"".join(lines) + _HEAD + b"\nhello\n"


def many_parts(count: int = 30000, seed: int = 1) -> bytes:
    """A multipart/mixed with `count` small text parts, each with its own words."""
    rng = random.Random(seed)
    parts = [b"--b\nContent-Type: text/plain\n\npart %d word%x\n" % (k, rng.getrandbits(32))
             for k in range(count)]
    return (_HEAD + b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
            + b"".join(parts) + b"--b--\n")


def deep_nesting(depth: int = 1000) -> bytes:
    """Multiparts nested `depth` levels, each level with its own boundary and a text part."""
    opening, closing = [], []
    for level in range(depth):
        opening.append(b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n"
                       b"Content-Type: text/plain\n\nlevel %d\n--n%d\n" % (level, level, level,
                                                                            level))
        closing.append(b"\n--n%d--\n" % level)
    inner = b"Content-Type: text/plain\n\nthe bottom\n"
    return (_HEAD + b"MIME-Version: 1.0\n" + b"".join(opening) + inner
            + b"".join(reversed(closing)))


def long_line(size: int = SIZE) -> bytes:
    """One 4 MB line of letters: no word boundary anywhere."""
    return _HEAD + b"\n" + b"x" * size + b"\n"


def long_header(size: int = SIZE, seed: int = 1) -> bytes:
    """A Subject header of ~4 MB of words, folded."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = _fill((bytes(rng.choices(letters, k=7)) for _ in iter(int, 1)), size * 70 // 72)
    folded = b"\n ".join(words[i:i + 70] for i in range(0, len(words), 70))
    return b"From: m@attacker.example\nSubject: " + folded + b"\n\nbody\n"


def html_spaces(size: int = 64 * 1024) -> bytes:
    """An HTML part: "<" and a run of spaces (quadratic for a regex with two \\s*: 11 s at
    20 KB)."""
    return (_HEAD + b"MIME-Version: 1.0\nContent-Type: text/html\n\n<" + b" " * size + b"\n")


def html_p_flood(count: int = 128_000) -> bytes:
    """An HTML part of "<p" with no ">" (each once scanned to the end)."""
    return _HEAD + b"MIME-Version: 1.0\nContent-Type: text/html\n\n" + b"<p" * count + b"\n"


def tiny_header_lines(count: int = 1_390_000) -> bytes:
    """1.4 million header lines "a:" (one Python object each: 344 MB)."""
    return _HEAD + b"a:\n" * count + b"\nbody\n"


def continuation_flood(count: int = 2_000_000) -> bytes:
    """One header folded over 2 million lines."""
    return _HEAD + b"X: a\n" + b" \n" * count + b"\nbody\n"


def bare_cr_flood(count: int = 1_400_000) -> bytes:
    """A spoofed X-DSPAM-Result of 1.4 million bare CRs (the stamping splits at each)."""
    return (b"X-DSPAM-Result: Innocent" + b"\rq" * count + b"\n" + _HEAD + b"\nbody\n")


def url_flood(parts: int = 4, size: int = 256 * 1024, seed: int = 1) -> bytes:
    """Text parts full of unique URL pieces (once past the token cap: 130,179 rows)."""
    rng = random.Random(seed)
    body = []
    for _ in range(parts):
        text, total = [], 0
        while total < size:
            url = b"http://h%x.example/%x/%x" % (rng.getrandbits(40), rng.getrandbits(40),
                                                 rng.getrandbits(40))
            text.append(url)
            total += len(url) + 1
        body.append(b"--u\nContent-Type: text/plain\n\n" + b" ".join(text) + b"\n")
    return (_HEAD + b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=u\n\n"
            + b"".join(body) + b"--u--\n")


def nested_base64(depth: int = 12, size: int = 2_900_000) -> bytes:
    """A base64 text part of 3 MB decoded inside `depth` nested multiparts (each level held
    a copy: 127 MB)."""
    import base64

    leaf = (b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(b"word " * (size // 5)))
    for level in reversed(range(depth)):
        leaf = (b"Content-Type: multipart/mixed; boundary=L%d\n\n--L%d\n" % (level, level)
                + leaf + b"\n--L%d--\n" % level)
    return _HEAD + b"MIME-Version: 1.0\n" + leaf


def boundary_bomb(count: int = 55_000) -> bytes:
    """Parts that are each a multipart with a boundary of its own (one regex each)."""
    parts = [b"--b\nContent-Type: multipart/mixed; boundary=x%d\n\n--x%d\n\nhi\n--x%d--\n"
             % (k, k, k) for k in range(count)]
    return (_HEAD + b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
            + b"".join(parts) + b"--b--\n")


ALL = {
    "unique_words": unique_words,
    "many_received": many_received,
    "many_parts": many_parts,
    "deep_nesting": deep_nesting,
    "long_line": long_line,
    "long_header": long_header,
    "html_spaces": html_spaces,
    "html_p_flood": html_p_flood,
    "tiny_header_lines": tiny_header_lines,
    "continuation_flood": continuation_flood,
    "bare_cr_flood": bare_cr_flood,
    "url_flood": url_flood,
    "nested_base64": nested_base64,
    "boundary_bomb": boundary_bomb,
}


def run_measured(argv: list[str], data: bytes, env: dict[str, str], **kw):
    """Run `argv` on `data`: (exit status, stdout, stderr, CPU seconds, peak MB).

    The peak is the process's VmHWM read every 2 ms until it exits: wait4()'s ru_maxrss would
    include the (larger) caller's, which a child inherits through vfork and exec."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kw)
    out: dict[str, bytes] = {}

    def feed():
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:
            pass

    def drain(name, stream):
        out[name] = stream.read()
    threads = [threading.Thread(target=feed),
               threading.Thread(target=drain, args=("out", proc.stdout)),
               threading.Thread(target=drain, args=("err", proc.stderr))]
    for thread in threads:
        thread.start()
    peak = 0.0
    while True:
        hwm = peak_mb(proc.pid)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if hwm is not None:
            peak = max(peak, hwm)
        time.sleep(0.002)
    for thread in threads:
        thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, out["out"], out["err"], usage.ru_utime + usage.ru_stime, peak)
