"""Reading the configuration file (config.py): its TOML, through a marshal cache.

Importing `tomllib` alone costs a filter process ~20 ms, so the parsed file is cached
(``home/config.cache``), keyed by the file's path, size, mtime and inode, and trusted only
when nobody but root or the configuration's owner could have written it.
"""

from __future__ import annotations

import os

from spamsift.filter.engine.errors import ConfigError


def parse_toml(path: str) -> tuple[dict[str, object], os.stat_result]:
    """The TOML file at `path`, and the status of the very file read (what the trust check
    must look at: a stat of the path afterwards may find another file swapped in). A
    ConfigError when it cannot be read or parsed."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            st = os.fstat(fh.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    import tomllib

    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parsed, st


def cached_toml(path: str, home_hint: str) -> tuple[dict[str, object], os.stat_result]:
    """`parse_toml`, going through a marshal cache in `home_hint` when one is usable (the
    status is then the one the cache entry was keyed by)."""
    import marshal

    try:
        st = os.stat(path)
    except OSError:
        return parse_toml(path)  # raises a clear ConfigError
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    cache = os.path.join(home_hint, "config.cache")
    try:
        with open(cache, "rb") as fh:
            cst = os.fstat(fh.fileno())
            # The cache decides who is trusted, so only a file that nobody else could have
            # written counts: owned by root or by the configuration's owner, not group- or
            # world-writable. And none more readable than the configuration (which may hold a
            # MySQL password), nor readable by another group: such a cache is rewritten.
            if (cst.st_uid in (0, st.st_uid) and not cst.st_mode & 0o022
                    and not cst.st_mode & 0o044 & ~st.st_mode
                    and (not cst.st_mode & 0o040 or cst.st_gid == st.st_gid)):
                cached_key, cached = marshal.load(fh)
                if tuple(cached_key) == key and isinstance(cached, dict):
                    return cached, st
    except (OSError, EOFError, ValueError, TypeError):
        pass
    parsed, st = parse_toml(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    try:
        tmp = f"{cache}.{os.getpid()}"
        # Readable by exactly whom the configuration is readable by: its read bits and its
        # group. (A cache of 0644 let every local user read a configuration kept at 0600.)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            try:  # root hands it to the configuration's owner, who may then read it too
                os.fchown(fh.fileno(), st.st_uid if os.geteuid() == 0 else -1, st.st_gid)
            except OSError:
                pass  # not a group of ours: owner-only below is then all it gets
            else:
                os.fchmod(fh.fileno(), 0o600 | (st.st_mode & 0o044))
            marshal.dump((key, parsed), fh)
        os.replace(tmp, cache)
    except (OSError, ValueError):
        pass  # no cache is only slower: the home may not be ours to write
    return parsed, st
