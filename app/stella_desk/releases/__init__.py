"""The release browser and release creation."""
