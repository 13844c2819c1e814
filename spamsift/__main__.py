"""``python -m spamsift``: the same as the ``spamsift`` command."""

import sys

from spamsift.main import main

sys.exit(main())
