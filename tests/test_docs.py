"""The documentation stays true: the configuration table is KEYS, and every link resolves.

SPAMSIFT_REGEN_DOCS=1 rewrites docs/configuration.md's table from KEYS (read the diff).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from spamsift.filter.engine.config import KEYS, USER_KEYS

ROOT = Path(__file__).resolve().parent.parent
TABLE_HEAD = "| key | default | per-user | meaning |\n|---|---|---|---|\n"


def config_table() -> str:
    rows = []
    for key, (default, _kind, choices, doc) in KEYS.items():
        text = doc
        if choices:
            text += f" {'Any' if _kind == 'algorithms' else 'One'} of: {', '.join(choices)}."
        rows.append(f"| `{key}` | `{json.dumps(default)}` | "
                    f"{'yes' if key in USER_KEYS else ''} | {text} |")
    return TABLE_HEAD + "\n".join(rows) + "\n"


def test_the_configuration_table_is_the_keys():
    path = ROOT / "docs" / "configuration.md"
    text = path.read_text()
    start = text.index(TABLE_HEAD)
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end + 1
    want = config_table()
    if os.environ.get("SPAMSIFT_REGEN_DOCS") == "1":
        path.write_text(text[:start] + want + text[end:])
        text = path.read_text()
    assert text[start:start + len(want)] == want, (
        "docs/configuration.md's table differs from KEYS: run with SPAMSIFT_REGEN_DOCS=1")


def test_every_key_is_declared_for_the_type_checker():
    """Settings' attribute declarations (what mypy checks uses against) cover KEYS exactly."""
    from spamsift.filter.engine.config import Settings

    declared = set()
    for klass in Settings.__mro__:
        declared |= set(vars(klass).get("__annotations__", {}))
    assert declared - {"origin"} == set(KEYS)


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, len(lines)
    assert "## The two commands" in lines
