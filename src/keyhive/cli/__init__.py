"""The ``keyhive`` command line."""
