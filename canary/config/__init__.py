"""canary.toml: every section's schema, env: secrets, and FILE: KEY.PATH validation errors."""
