"""Everything persistent: one SQLite database in the state directory."""
