"""spamsift's engine and the DSPAM-compatible inline filter.

Import as ``from spamsift.filter.engine import ...``; a bare ``import filter`` would hide the
builtin.
"""
