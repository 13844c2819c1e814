"""Where training mail comes from: Maildir++, mbox, MH, a directory of files, an index file,
an IMAP folder. Every source is read as a stream, so memory does not grow with its size.

A source names a place; `plan_sources` turns the command line's places into labelled
*streams* (one per folder or file and class) with a message count each, and `interleave`
merges the spam and the ham streams in proportion, as DSPAM's ``dspam_train`` does: a filter
fed all its ham first and then all its spam learns a different (worse) model than one fed
them mixed, and the order real mail arrives in is mixed.

Labels: a Maildir's spam folders (`spam_folders`) are spam, its ignored folders are skipped,
the rest is ham; an index file says ``spam PATH`` / ``ham PATH`` per line (TREC's format,
paths relative to the file); `--spam` / `--ham` force a label on everything under a place;
an IMAP folder is spam when its name is a spam folder's. Any other unlabelled place is an
error (one line, before anything is trained).
"""

from __future__ import annotations

import os

from spamsift.filter.engine import mailfolders
from spamsift.filter.engine.errors import UsageError
from spamsift.trainer.stream import Stream

SPAM, HAM = "spam", "innocent"
LABEL_WORDS = {"spam": SPAM, "ham": HAM, "innocent": HAM, "nonspam": HAM}


def _read(path: str, follow: bool = False) -> bytes | None:
    """A message file's bytes; None when it vanished, is unreadable, or is no regular file.

    Files found in a user's tree (Maildir, MH, directory) are read without following a
    symlink (`mailfolders.read_message`): training runs as root over users' mail, and a user's
    link to /etc/shadow would be learned as their mail, a FIFO would hang the run and
    /dev/zero exhaust memory. Files an administrator named (index entries, a lone file)
    may be links (`follow`), but only to regular files."""
    try:
        if follow:
            path = os.path.realpath(path)
        return mailfolders.read_message(path)
    except OSError:
        return None  # the caller counts it as skipped


def _files_stream(label: str, where: str, paths: list[str], follow: bool = False) -> Stream:
    def opener():
        for path in paths:
            yield _read(path, follow), path
    return Stream(label, where, len(paths), opener)


# -- Maildir++ -------------------------------------------------------------------------------
def maildir_streams(root: str, settings, label: str | None) -> list[Stream]:
    """One stream per folder of a Maildir++ (INBOX and every ``.Folder``)."""
    streams = []
    for folder in mailfolders.folders(root, settings.spam_folders, settings.ignored_folders):
        if folder.kind == mailfolders.IGNORED and label is None:
            continue
        where = os.path.join(root, folder.name) if folder.name else root
        streams.append(folder_stream(folder.path, folder.kind, where, label))
    return streams


def folder_stream(path: str, kind: str, where: str, label: str | None) -> Stream:
    """The messages of one Maildir folder of `kind`, labelled by it unless `label`."""
    klass = label or (SPAM if kind == mailfolders.SPAM else HAM)
    paths = [os.path.join(path, sub, name) for sub, name in mailfolders.message_files(path)]
    return _files_stream(klass, where, paths)


# -- mbox ------------------------------------------------------------------------------------
def _is_mbox(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(5) == b"From "


def mbox_stream(path: str, label: str) -> Stream:
    """An mbox file. The stdlib indexes message offsets once (memory: two ints a message)."""
    import mailbox

    box = mailbox.mbox(path, create=False)
    keys = box.keys()

    def opener():
        try:
            for key in keys:
                try:
                    yield box.get_bytes(key), f"{path}#{key + 1}"
                except (OSError, KeyError):
                    yield None, f"{path}#{key + 1}"
        finally:
            box.close()
    return Stream(label, path, len(keys), opener)


# -- MH --------------------------------------------------------------------------------------
def _is_mh(path: str) -> bool:
    if os.path.exists(os.path.join(path, ".mh_sequences")):
        return True
    names = os.listdir(path)
    return bool(names) and all(n.isdigit() or n.startswith(".") for n in names) and any(
        n.isdigit() for n in names)


def mh_streams(path: str, label: str) -> list[Stream]:
    """An MH folder (numbered files) and its subfolders, through the stdlib's reader."""
    import mailbox

    box = mailbox.MH(path, create=False)
    keys = sorted(box.keys())
    streams = [_files_stream(label, path, [os.path.join(path, str(k)) for k in keys])]
    for sub in sorted(box.list_folders()):
        streams += mh_streams(os.path.join(path, sub), label)
    return streams


# -- directory of one-message files ------------------------------------------------------------
def directory_stream(path: str, label: str) -> Stream:
    """Every regular file under `path`, recursively, in name order (dotfiles skipped)."""
    paths = []
    for top, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [os.path.join(top, f) for f in sorted(files) if not f.startswith(".")]
    return _files_stream(label, path, paths)


# -- index file ------------------------------------------------------------------------------
def _index_entries(path: str) -> list[tuple[str, str]] | None:
    """[(label, file path)] when `path` is an index file, None when it is not one."""
    base = os.path.dirname(os.path.abspath(path))
    entries: list[tuple[str, str]] = []
    with open(path, "rb") as f:
        head = f.read(4096)
        if b"\0" in head:
            return None
        f.seek(0)
        for number, line in enumerate(f, 1):
            words = line.decode("utf-8", "replace").split(None, 1)
            if not words:
                continue
            label = LABEL_WORDS.get(words[0].lower())
            if label is None or len(words) < 2:
                if not entries:
                    return None  # not an index: the first line decides
                raise UsageError(f"{path}:{number}: expected 'spam PATH' or 'ham PATH'")
            entries.append((label, os.path.join(base, words[1].strip())))
    return entries or None


def index_streams(path: str, entries: list[tuple[str, str]], label: str | None) -> list[Stream]:
    """One stream per class and folder of the listed files, in the order they first appear:
    the folders of an index are usually its sources (a corpus's parts, a user's folders), and
    `interleave` spreads each over the run instead of taking one after the other."""
    groups: dict[tuple[str, str], list[str]] = {}
    for lab, p in entries:
        groups.setdefault((label or lab, os.path.dirname(p)), []).append(p)
    return [_files_stream(klass, f"{path} ({klass}, {os.path.basename(folder) or '.'})", paths,
                          follow=True)
            for (klass, folder), paths in groups.items()]


# -- dispatch --------------------------------------------------------------------------------
def streams_for(place: str, settings, label: str | None, imap_options=None) -> list[Stream]:
    """The labelled streams of one command-line place. Raises UsageError with one line."""
    if place.startswith(("imap://", "imaps://")):
        return [_imap_stream(place, label, settings, imap_options)]
    if not os.path.exists(place):
        import errno

        # A source that cannot be read is NOINPUT (66), as the exit code table says.
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", place)
    if os.path.isdir(place):
        if mailfolders.is_maildir(place) and is_subfolder(place):
            # ~/Maildir/.Spam given itself: its folder name says its class, as inside a
            # Maildir (taken for an INBOX, a spam folder was trained as ham).
            name = os.path.basename(os.path.abspath(place))
            kind = mailfolders.folder_kind(name, settings.spam_folders, settings.ignored_folders)
            if kind == mailfolders.IGNORED and label is None:
                raise UsageError(f"{place}: an ignored folder ({name}); say --spam or --ham "
                                 "to train it")
            return [folder_stream(place, kind, place, label)]
        if mailfolders.is_maildir(place) or any(
                mailfolders.is_maildir(os.path.join(place, d)) for d in os.listdir(place)
                if d.startswith(".")):
            return maildir_streams(place, settings, label)
        if label is None:
            raise UsageError(f"{place}: not a Maildir; say --spam or --ham for a directory "
                             "or MH folder")
        if _is_mh(place):
            return mh_streams(place, label)
        return [directory_stream(place, label)]
    if _is_mbox(place):
        if label is None:
            raise UsageError(f"{place}: an mbox file; say --spam or --ham")
        return [mbox_stream(place, label)]
    entries = _index_entries(place)
    if entries is not None:
        return index_streams(place, entries, label)
    if label is None:
        raise UsageError(f"{place}: neither a Maildir, an mbox nor an index file; say --spam "
                         "or --ham to train it as one message")
    return [_files_stream(label, place, [place], follow=True)]


def is_subfolder(path: str) -> bool:
    """Whether the Maildir at `path` is a Maildir++ folder rather than a mailbox's INBOX: it
    holds Courier's and Dovecot's ``maildirfolder`` marker, or it is a ``.Name`` inside
    another Maildir (``~/.maildir`` itself is a common mailbox: its parent is a home)."""
    if os.path.exists(os.path.join(path, "maildirfolder")):
        return True
    full = os.path.abspath(path)
    name = os.path.basename(full)
    return (name.startswith(".") and name not in (".", "..")
            and mailfolders.is_maildir(os.path.dirname(full)))


def _imap_stream(url: str, label: str | None, settings, options) -> Stream:
    from spamsift.trainer import imap_source

    folder = url.split("/", 3)[3] if url.count("/") >= 3 else "INBOX"
    from urllib.parse import unquote

    kind = mailfolders.folder_kind(unquote(folder.split(";")[0].split("?")[0]),
                               settings.spam_folders, settings.ignored_folders)
    klass = label or (SPAM if kind == mailfolders.SPAM else HAM)
    return imap_source.stream(url, klass, options or {})


def plan_sources(places: list[str], spam: list[str], ham: list[str], settings,
                 imap_options=None) -> list[Stream]:
    """All streams of a training run; nothing is read yet beyond listings and counts."""
    streams: list[Stream] = []
    for place in places:
        streams += streams_for(place, settings, None, imap_options)
    for place in spam:
        streams += streams_for(place, settings, SPAM, imap_options)
    for place in ham:
        streams += streams_for(place, settings, HAM, imap_options)
    return [s for s in streams if s.count]


def interleave(streams: list[Stream]):
    """(label, raw, name) over all streams, as `interleave_streams`."""
    for stream, raw, name in interleave_streams(streams):
        yield stream.label, raw, name


def interleave_streams(streams: list[Stream]):
    """(stream, raw, name) over all streams, each spread over the run in proportion to its
    size.

    The stream furthest behind its share goes next, so 1,000 ham and 500 spam come as ham,
    spam, ham, ham, spam, ... (dspam_train's ratio), and two ham folders are mixed too rather
    than one learned after the other. Deterministic for a given input. Why folders too: the
    logistic model learns message by message and leans toward what it learned last; trained on
    the SpamAssassin corpus with its five parts one after the other within each class (the last
    250 messages all hard_ham newsletters), a 5-fold estimate (`spamsift evaluate`) gave 2 ham
    and 167 spam errors at (1-ROCA)% 0.340; with the parts mixed, 3 / 105 / 0.111 (Bayes counts
    do not depend on the order: 6 / 84 / 0.0279)."""
    queues = [s.open() for s in streams]
    counts = [max(s.count, 1) for s in streams]
    done = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        n = min(live, key=lambda k: ((done[k] + 1) / counts[k], streams[k].label, k))
        try:
            raw, name = next(queues[n])
        except StopIteration:
            live.remove(n)
            continue
        done[n] += 1
        yield streams[n], raw, name


# -- the command line of `train` and `evaluate` ----------------------------------------------
def batch_gc() -> None:
    """Tune the garbage collector for a corpus run (`train`, `evaluate`): such a run keeps
    millions of long-lived objects (token caches and counts) and creates almost no cyclic
    garbage, yet CPython's default thresholds made 27 full collections over all of them in
    one training run of the SpamAssassin corpus. Default algorithms, two runs each: 197 / 215
    msg/s with the defaults, 237 / 242 with these thresholds (none full)."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def add_source_arguments(parser) -> None:
    """The source arguments `spamsift train` and `spamsift evaluate` share."""
    parser.add_argument("sources", nargs="*", metavar="SOURCE")
    parser.add_argument("--spam", action="append", default=[], metavar="PATH",
                        help="everything under PATH is spam (repeatable)")
    parser.add_argument("--ham", action="append", default=[], metavar="PATH",
                        help="everything under PATH is ham (repeatable)")
    parser.add_argument("--password-file", help="IMAP password from this file")
    parser.add_argument("--cafile", help="CA certificates to verify an IMAP server with")


def require_sources(args, what: str) -> None:
    """UsageError (one line) when the command line names no source at all."""
    if not (args.sources or args.spam or args.ham):
        raise UsageError(f"nothing to {what}: give a SOURCE, --spam PATH or --ham PATH")


def planned_streams(args, settings) -> list[Stream]:
    """The streams of the command line's sources; UsageError when they hold no message."""
    imap_options = {"password_file": args.password_file, "cafile": args.cafile}
    streams = plan_sources(args.sources, args.spam, args.ham, settings, imap_options)
    if not sum(s.count for s in streams):
        raise UsageError("the sources hold no messages")
    return streams
