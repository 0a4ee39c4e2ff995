"""Studies over trained runs (they read run folders and exported graphs; nothing below imports them)."""
