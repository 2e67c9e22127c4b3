"""The subcommands of ``estatewatch``, a module per package they drive."""
