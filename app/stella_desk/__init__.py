"""Stella Release Desk: the PySide6 desktop over `stella_core`."""
