"""The ``robprune`` command line."""
