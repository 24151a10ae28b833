"""The `stella` command line: every action scriptable, JSON output, stable exit codes."""
