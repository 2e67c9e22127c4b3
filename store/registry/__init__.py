"""The registry database: the estate and its devices (SQLAlchemy 2, async; SQLite or PostgreSQL)."""
