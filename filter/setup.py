"""``spamsift setup``: a privilege-separated node in one idempotent command.

What it makes (each step skipped when already so; ``--dry-run`` prints the plan and changes
nothing; ``--root DIR`` puts every file under DIR, for packaging and tests):

1. the system user that owns spamsift's state (``--user``, default ``spamsift``);
2. the home (``/var/lib/spamsift``, mode 0711: delivery uids may reach ``passthrough/`` in it,
   nothing else) and ``passthrough/`` (1733), the socket folder (``/run/spamsift``, 0755);
3. the configuration (``/etc/spamsift.toml``, root's, 0644) when there is none;
4. the database, created by ``db init`` and owned by that user alone (0600): only the
   daemon, running as that user, writes it; deliveries and aliases go through the daemon;
5. the systemd units (daemon, Maildir watcher) with the real paths, the example maildroprc as
   ``/etc/maildroprc.spamsift`` (never over an existing ``/etc/maildroprc``) and the
   system-wide Courier aliases, when Courier's aliasdir exists or ``--root`` is given.

It prints what to do next (enable the units, merge the maildroprc, run ``spamsift doctor`` as
each uid). Exit 0 when done, 77 when not run as root (without --dry-run), 78 when a step fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from spamsift.filter.engine import exitcodes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift setup",
        description="Make a privilege-separated spamsift node: a system user owning the "
                    "state, the home, the configuration, the database, the systemd units, "
                    "maildroprc and the Courier aliases. Idempotent.")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--root", default="/", help="install under this folder (default /)")
    parser.add_argument("--user", default="spamsift", help="the system user that owns the state")
    parser.add_argument("--home", default="/var/lib/spamsift")
    parser.add_argument("--config", default="/etc/spamsift.toml")
    parser.add_argument("--socket", default="/run/spamsift/spamsift.sock")
    parser.add_argument("--trusted", action="append", default=[], metavar="USER",
                        help="also trust USER (e.g. vmail, the virtual mailboxes' uid)")
    parser.add_argument("--bin", default=None,
                        help="the spamsift command the units, maildroprc and aliases run "
                             "(default: this one)")
    parser.add_argument("--mail-root", default="/var/mail/virtual",
                        help="what the watcher unit watches")
    return parser


class Plan:
    def __init__(self, dry_run: bool, out) -> None:
        self.dry_run = dry_run
        self.out = out

    def step(self, text: str) -> bool:
        """Say a step; whether to carry it out."""
        print(("would: " if self.dry_run else "") + text, file=self.out)
        return not self.dry_run


def main(argv: list[str] | None = None, out=None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    plan = Plan(args.dry_run, out)
    if not args.dry_run and os.geteuid() != 0:
        print("spamsift setup: run it as root (or with --dry-run to see the plan)",
              file=sys.stderr)
        return exitcodes.NOPERM
    root = Path(args.root)
    spamsift = args.bin or _this_command()

    def at(path: str) -> Path:
        return root / path.lstrip("/")
    try:
        uid, gid = _user(args.user, args.home, plan)
        home, folder = at(args.home), at(os.path.dirname(args.socket))
        _folder(home, 0o711, uid, gid, plan)
        # The site user's, so that the daemon's and the watcher's metrics can list it;
        # sticky and not readable by others: every uid adds its own file, none lists.
        _folder(home / "passthrough", 0o1733, uid, gid, plan)
        _folder(folder, 0o755, uid, gid, plan)
        config = at(args.config)
        # The site user runs the daemon and the watcher, which act for every user.
        trusted = ["root", "mail", "courier", "daemon", args.user, *args.trusted]
        _file(config, _config_text(args.home, trusted), 0o644, plan)
        _database(config, home, args.user, uid, gid, plan)
        units = at("/etc/systemd/system")
        _file(units / "spamsift-daemon.service", _daemon_unit(spamsift, args), 0o644, plan)
        _file(units / "spamsift-watch.service", _watch_unit(spamsift, args), 0o644, plan)
        _file(at("/etc/maildroprc.spamsift"), _maildroprc(spamsift), 0o644, plan)
        aliasdir = at("/etc/courier/aliasdir")
        if args.root != "/" or aliasdir.is_dir():
            for name in (".courier-spam-default", ".courier-fp-default"):
                _file(aliasdir / name, _alias(name, spamsift), 0o644, plan)
    except (OSError, ValueError) as exc:
        print(f"spamsift setup: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    print("next: systemctl daemon-reload && systemctl enable --now spamsift-daemon "
          "spamsift-watch; merge /etc/maildroprc.spamsift into /etc/maildroprc; then run "
          "`spamsift doctor` as root, as each delivery uid and as Courier's user", file=out)
    return exitcodes.OK


def _this_command() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "spamsift")
    return here if os.path.exists(here) else shutil.which("spamsift") or "/usr/local/bin/spamsift"


def _user(name: str, home: str, plan: Plan) -> tuple[int, int]:
    import pwd
    import subprocess

    try:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        pass
    if plan.step(f"create the system user {name}"):
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", home,
                        "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    return -1, -1


def _folder(path: Path, mode: int, uid: int, gid: int, plan: Plan) -> None:
    if path.is_dir():
        st = path.stat()
        if st.st_mode & 0o7777 == mode and (uid < 0 or (st.st_uid, st.st_gid) == (uid, gid)):
            return
        if plan.step(f"set {path} to mode {mode:o}, owner {uid}:{gid}"):
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return
    if plan.step(f"make {path} (mode {mode:o}, owner {uid}:{gid})"):
        path.mkdir(parents=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)


def _file(path: Path, text: str, mode: int, plan: Plan) -> None:
    if path.exists():
        return  # the administrator's now: never overwritten
    if plan.step(f"write {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)


def _database(config: Path, home: Path, user: str, uid: int, gid: int, plan: Plan) -> None:
    db = home / "spamsift.db"
    if db.exists() and db.stat().st_uid == uid and db.stat().st_mode & 0o077 == 0:
        return
    if not plan.step(f"create or upgrade the database {db}, owned by {user} alone"):
        return
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_CONFIG=str(config), SPAMSIFT_HOME=str(home))
    done = subprocess.run([sys.executable, "-m", "spamsift", "db", "init"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"db init: {done.stderr.strip() or done.stdout.strip()}")
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            os.chown(path, uid, gid)
            os.chmod(path, 0o600)


def _config_text(home: str, trusted: list[str]) -> str:
    names = ", ".join(f'"{n}"' for n in dict.fromkeys(trusted))
    return ("# spamsift configuration, made by `spamsift setup`. Every key and its default:\n"
            "# `spamsift config --defaults`; the reference: docs/configuration.md.\n"
            f'home = "{home}"\n'
            f"trusted_users = [{names}]\n")


def _daemon_unit(spamsift: str, args) -> str:
    return f"""# Made by `spamsift setup`. The daemon owns the database; deliveries are its clients.
[Unit]
Description=spamsift filter daemon
After=network.target mariadb.service

[Service]
Type=simple
User={args.user}
Group={args.user}
RuntimeDirectory={os.path.basename(os.path.dirname(args.socket))}
RuntimeDirectoryMode=0755
Environment=SPAMSIFT_CONFIG={args.config}
ExecStart={spamsift} daemon --socket {args.socket}
Restart=on-failure
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
"""


def _watch_unit(spamsift: str, args) -> str:
    return f"""# Made by `spamsift setup`. The watcher writes what users' drags teach: it runs as
# the user that owns the database; give that user read access to the mail store (a group).
[Unit]
Description=spamsift Maildir watcher
After=network.target remote-fs.target spamsift-daemon.service

[Service]
Type=simple
User={args.user}
Group={args.user}
Environment=SPAMSIFT_CONFIG={args.config}
ExecStart={spamsift} watch {args.mail_root}
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def _maildroprc(spamsift: str) -> str:
    import re

    text = (EXAMPLES / "maildroprc").read_text()
    return re.sub(r'(?m)^SPAMSIFT=.*$', lambda _m: f'SPAMSIFT="{spamsift}"', text)


def _alias(name: str, spamsift: str) -> str:
    text = (EXAMPLES / "courier" / "aliasdir" / name).read_text()
    return text.replace("/usr/local/bin/spamsift", spamsift)
