"""A ready `Host` for an agentless target (SSH or WinRM), from the target and its secret as the
orchestrator's `EnvironmentService.target_connection(name)` returns them. Agent targets are
reached through the agent gateway (their tasks go through the task queue), not through here."""

from __future__ import annotations

from stella_core.deploy.hosts import Host, HostError
from stella_core.environments.model import Target, TargetType, WinrmAuth


def host_for(target: Target, secret: str | None, *, connect_timeout: float = 10) -> Host:
    """The host to run a task on for `target`; connects on first use. Raises HostError when the
    target is an agent's or its stored connection is incomplete."""
    if target.type is TargetType.SSH:
        if not (target.host and target.port and target.user and target.known_hosts and secret):
            raise HostError(f"target {target.name}: its SSH connection is incomplete")
        from stella_core.deploy.ssh import SshHost

        return SshHost(
            target.host,
            target.port,
            target.user,
            secret,
            target.known_hosts,
            connect_timeout=connect_timeout,
        )
    if target.type is TargetType.WINRM:
        if not (target.url and target.user and secret):
            raise HostError(f"target {target.name}: its WinRM connection is incomplete")
        from stella_core.deploy.winrm import WinrmHost

        return WinrmHost(
            target.url,
            target.user,
            secret,
            transport=(target.auth or WinrmAuth.NTLM).value,
            ca_pem=target.ca_cert,
        )
    raise HostError(
        f"target {target.name} is reached through its agent {target.agent}, not directly"
    )
