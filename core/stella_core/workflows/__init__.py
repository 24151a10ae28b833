"""Workflows: versioned DAG templates, validation, expressions, the engine, built-in steps."""
