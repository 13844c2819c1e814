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
