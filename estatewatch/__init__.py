"""The ``estatewatch`` command line."""
