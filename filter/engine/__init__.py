"""The headless core: tokenizer, classifier, training rules, signatures, users and storage.

Nothing here imports rich, watchdog or imapclient, and nothing here imports the filter command,
the trainer or the watchers: they are applications built on this package. Submodules are
imported explicitly (``from spamsift.filter.engine.tokenizer import Tokenizer``) so that the
per-message filter loads only what it uses.
"""
