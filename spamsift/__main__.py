"""``python -m spamsift``: the same as the ``spamsift`` command."""

import sys

from spamsift.main import main

# Guarded: `spamsift train`'s helper processes (filter/engine/tokenpool.py, multiprocessing's
# spawn) import the main module again under another name, and must not run the command.
if __name__ == "__main__":
    sys.exit(main())
