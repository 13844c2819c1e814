"""The SQL schemas and scripts, shipped as package data so the backends can create databases."""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def path(backend: str, name: str) -> str:
    """The file `name` of `backend` ("sqlite" or "mysql"), e.g. path("sqlite", "schema.sql")."""
    return os.path.join(HERE, backend, name)


def read(backend: str, name: str) -> str:
    with open(path(backend, name), encoding="utf-8") as fh:
        return fh.read()


SCHEMA_FILES = {"sqlite": ("schema.sql",), "mysql": ("virtual_users.sql", "schema.sql")}
_NOT_COLUMNS = ("PRIMARY", "UNIQUE", "KEY", "INDEX", "CONSTRAINT", "FOREIGN", "CHECK")


def statements(backend: str) -> list[str]:
    """The schema's SQL statements for `backend`, comments removed, in order."""
    out = []
    for name in SCHEMA_FILES[backend]:
        text = "\n".join(line.split("--", 1)[0] for line in read(backend, name).splitlines())
        out += [s.strip() for s in text.split(";") if s.strip()]
    return out


def tables(backend: str) -> dict[str, list[str]]:
    """Table name -> column names, as the schema files define them."""
    result: dict[str, list[str]] = {}
    for stmt in statements(backend):
        words = stmt.split()
        if len(words) < 3 or [w.upper() for w in words[:2]] != ["CREATE", "TABLE"]:
            continue
        name = words[5] if words[2].upper() == "IF" else words[2]
        body = stmt[stmt.index("(") + 1:stmt.rindex(")")]
        columns, depth, item = [], 0, ""
        for ch in body + ",":
            if ch == "," and depth == 0:
                first = item.split()[0] if item.split() else ""
                if first and first.upper() not in _NOT_COLUMNS:
                    columns.append(first)
                item = ""
                continue
            depth += (ch == "(") - (ch == ")")
            item += ch
        result[name] = columns
    return result
