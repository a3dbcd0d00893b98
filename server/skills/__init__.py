"""Skills: validated, searchable, tenant-scoped Python functions run only in sandboxes."""
