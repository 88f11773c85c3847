"""The blocklist service (every domain rule once), CSV import and export, and the Meta sync queue's worker."""
