"""Storage: the engine and embedded PostgreSQL, ORM tables, result writes and rollups."""
