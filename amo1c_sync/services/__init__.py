"""Services the daemon, the CLI and the jobs call on demand (not scheduled): free slots (F1)."""
