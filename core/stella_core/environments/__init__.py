"""Environments: promotion order and approval requirements (freeze windows and targets follow)."""
