"""Administration: environments and their policy, freezes, registries, components, people, and
this machine's settings."""
