"""spamsift: the ``spamsift`` command, which dispatches to the filter, trainer and watchers."""

__version__ = "0.1.0"
