"""Users: name validation, trusted callers, home folders, opt-in and opt-out.

A user name is checked before it goes anywhere near a path, a SQL statement or a log line:
letters, digits and ``._-+@=``, no ``..``, no leading ``.``, at most 128 bytes
(``dspam_virtual_uids.username``). Names are kept as given except that the domain of an
address is lowercased (domains are case-insensitive; local parts need not be).
"""

from __future__ import annotations

import os

from spamsift.filter.engine.errors import InvalidUserError, PermissionDeniedError

MAX_NAME = 128
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+@=")
DSPAM_OPT_IN = ".dspam"
DSPAM_OPT_OUT = ".nodspam"


def validate(name: str) -> str:
    """The canonical form of a user name, or `InvalidUserError`.

    A name from the command line or a folder that is not UTF-8 arrives with surrogate
    escapes: the character check comes first, so it is this error, never an encoding one.
    A local part may start with ``-`` (``--user=-x``; ``--user -x`` is a flag)."""
    shown = repr(name[:40].encode("utf-8", "surrogateescape"))[2:-1]
    if not name or len(name) > MAX_NAME:  # every allowed character is one byte
        raise InvalidUserError(f"invalid user name '{shown}': must be 1-{MAX_NAME} bytes")
    if not set(name) <= _ALLOWED:
        raise InvalidUserError(f"invalid user name '{shown}': letters, digits and ._-+@= only")
    if name[0] == "." or ".." in name or name.count("@") > 1 or name.endswith("@"):
        raise InvalidUserError(f"invalid user name '{shown}'")
    local, at, domain = name.partition("@")
    return local + at + domain.lower()


class Caller:
    """Who asks: an OS uid and its name (this process, or a daemon client's peer)."""

    __slots__ = ("uid", "name")

    def __init__(self, uid: int, name: str) -> None:
        self.uid = uid
        self.name = name


def caller_for_uid(uid: int) -> Caller:
    try:
        import pwd

        return Caller(uid, pwd.getpwuid(uid).pw_name)
    except (KeyError, ImportError):
        return Caller(uid, str(uid))


def this_process() -> Caller:
    """The OS user running this process (the real uid: a setuid wrapper does not count)."""
    return caller_for_uid(os.getuid())


def is_trusted(caller: Caller, trusted_users: tuple[str, ...]) -> bool:
    return caller.uid == 0 or caller.name == "root" or caller.name in trusted_users


def authorize(caller: Caller, users: list[str], trusted_users: tuple[str, ...]) -> None:
    """Untrusted callers may act only for themselves (DSPAM's Trust rule)."""
    if is_trusted(caller, trusted_users):
        return
    for user in users:
        if user != caller.name:
            raise PermissionDeniedError(
                f"{caller.name} is not a trusted user and may not act for {user}")


def acting_for(name: str, settings) -> str:
    """The canonical user `name`, once this process's OS user may act for it (`validate`,
    then `authorize`): what every command that works for one user checks first."""
    user = validate(name)
    authorize(this_process(), [user], settings.trusted_users)
    return user


def home_of(user: str, template: str, home_arg: str | None,
            environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The user's home folder, for dotfiles: --home, the template, maildrop's $HOME, passwd."""
    if home_arg:
        return home_arg
    local, _, domain = user.partition("@")
    if template:
        # The name was validated: no '/' and no '..', so it cannot leave the template's tree.
        return template.replace("%U", user).replace("%u", local).replace("%d", domain or "local")
    if environ.get("HOME") and user in (environ.get("LOGNAME"), environ.get("USER")):
        return environ["HOME"]
    if not domain:
        try:
            import pwd

            return pwd.getpwnam(user).pw_dir
        except (KeyError, ImportError):
            return None
    return None


def opted_in(preference: str | None, default: str, home: str | None,
             in_file: str, out_file: str) -> bool:
    """Whether a user is filtered: their preference, else a dotfile, else the global default."""
    if preference is not None:
        preference = preference.strip().lower()  # rows written by hand or by DSPAM's tools
    if preference in ("in", "out"):
        return preference == "in"
    if home:
        if _exists(home, out_file) or _exists(home, DSPAM_OPT_OUT):
            return False
        if _exists(home, in_file) or _exists(home, DSPAM_OPT_IN):
            return True
    return default == "out"


def _exists(home: str, name: str) -> bool:
    try:
        return os.path.lexists(os.path.join(home, name))
    except (OSError, ValueError):
        return False
