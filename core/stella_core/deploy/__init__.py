"""Deployment: tasks for the three transports (agent, SSH, WinRM), compose lockfiles pinned by
digest, signed version stickers, and the `deploy` step. Owns the `deploy` schema."""
