"""Drift: what really runs on each target, compared with what the database says should."""
