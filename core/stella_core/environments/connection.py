"""Checks of a target's connection material, made when a target is added so a bad key or host
key file is refused then, not at the first deployment. The SSH transport loads keys with the
same functions, so what was accepted here is what connects.

Every value here is untrusted input: messages never echo a key or a password.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import re
import shlex
from urllib.parse import urlsplit

import paramiko

from stella_core.errors import DefinitionError
from stella_core.limits import check_text, shown

MAX_KEY_TEXT = 64 * 1024
MAX_KNOWN_HOSTS = 1024 * 1024
MAX_CA_TEXT = 256 * 1024
MAX_FIELD = 1024

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
# A login name as POSIX and Windows accept it (DOMAIN\user and user@realm included), no spaces.
_USER = re.compile(r"^[A-Za-z0-9._@\\$-][A-Za-z0-9._@\\$-]{0,255}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:…` as OpenSSH prints it (ssh-keygen -l)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_private_key(text: str) -> paramiko.PKey:
    """An SSH private key (OpenSSH or PEM; Ed25519, ECDSA or RSA) without a passphrase: the
    orchestrator connects unattended and cannot ask for one."""
    if len(text) > MAX_KEY_TEXT:
        raise DefinitionError(
            f"the private key is larger than {MAX_KEY_TEXT} bytes", field="key file"
        )
    if "PRIVATE KEY-----" not in text:
        raise DefinitionError(
            "the key file holds no private key (an SSH public key or another file?)",
            field="key file",
        )
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise DefinitionError(
                "the private key is protected by a passphrase; give a key without one "
                "(the orchestrator connects unattended)",
                field="key file",
            ) from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    raise DefinitionError(
        "the key file is not a private key Stella can use (OpenSSH or PEM; Ed25519, ECDSA or RSA)",
        field="key file",
    )


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """The host keys of a known_hosts text. A line that is not a host key is refused, naming
    its number (a silently skipped line would be a key that is not pinned)."""
    if len(text) > MAX_KNOWN_HOSTS:
        raise DefinitionError(
            f"the known_hosts file is larger than {MAX_KNOWN_HOSTS} bytes", field="known hosts"
        )
    check_text(text, "the known_hosts file", field="known hosts")
    keys = paramiko.HostKeys()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise DefinitionError(
                f"known_hosts line {number}: markers (@cert-authority, @revoked) are not "
                "supported; list the host's own keys",
                field="known hosts",
            )
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            raise DefinitionError(
                f"known_hosts line {number} is not a host key line (hosts, key type, key)",
                field="known hosts",
            ) from exc
        if entry is None:
            raise DefinitionError(
                f"known_hosts line {number} is not a host key line (hosts, key type, key)",
                field="known hosts",
            )
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


def check_known_hosts(text: str, host: str, port: int) -> str:
    """The known_hosts text, when it pins at least one key for this host and port."""
    keys = parse_known_hosts(text)
    name = known_hosts_name(host, port)
    if keys.lookup(name) is None:
        raise DefinitionError(
            f"the known_hosts file has no key for {name}; add the host's key "
            f"(ssh-keyscan{'' if port == 22 else f' -p {port}'} {host}) after checking it",
            field="known hosts",
        )
    return text


def check_host(host: str) -> str:
    """A host name or an IP address (no user, port or spaces)."""
    value = host.strip()
    if not value:
        raise DefinitionError("host is empty", field="host")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise DefinitionError(
            f"host {shown(value)} is not a host name or an IP address", field="host"
        )
    return value.lower()


def check_user(user: str) -> str:
    if not _USER.match(user):
        raise DefinitionError(
            f"user {shown(user)} is not a login name (letters, digits, '.', '_', '-', '@', '\\')",
            field="user",
        )
    return user


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise DefinitionError(f"port {port} is not from 1 to 65535", field="port")
    return port


def check_winrm_url(url: str, *, insecure_http: bool) -> str:
    """A WinRM endpoint: https (http only when explicitly allowed), a host, the /wsman path."""
    check_text(url, "url", field="url")
    if len(url) > MAX_FIELD:
        raise DefinitionError(f"url is longer than {MAX_FIELD} characters", field="url")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http"):
        raise DefinitionError(
            f"url {shown(url)} is not an http(s) URL (https://HOST:5986/wsman)", field="url"
        )
    if parts.scheme == "http" and not insecure_http:
        raise DefinitionError(
            f"url {shown(url)} is plain http: WinRM credentials and commands would cross the "
            "network unprotected; use https, or allow plain http explicitly",
            field="url",
        )
    if parts.username or parts.password:
        raise DefinitionError(
            "do not put credentials in the WinRM URL; give the user and the password apart",
            field="url",
        )
    if not parts.hostname:
        raise DefinitionError(f"url {shown(url)} names no host", field="url")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        raise DefinitionError(f"url {shown(url)} has an invalid port", field="url") from None
    path = parts.path or "/wsman"
    return f"{parts.scheme}://{parts.netloc}{path}"


def check_ca_cert(text: str) -> str:
    """PEM certificates (a CA bundle) the WinRM host's certificate is checked against."""
    from cryptography import x509

    if len(text) > MAX_CA_TEXT:
        raise DefinitionError(f"the CA file is larger than {MAX_CA_TEXT} bytes", field="ca file")
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        certs = []
    if not certs:
        raise DefinitionError("the CA file holds no PEM certificate", field="ca file")
    return text


def check_runtime(runtime: str) -> str:
    """The compose command on the target: `podman-compose`, `docker compose`, or another
    command line (split like a shell would, never run through one)."""
    check_text(runtime, "runtime", field="runtime")
    try:
        words = shlex.split(runtime)
    except ValueError:
        raise DefinitionError(
            f"runtime {shown(runtime)} is not a command line (unbalanced quotes)",
            field="runtime",
        ) from None
    if not words or len(runtime) > MAX_FIELD or any("\n" in w for w in words):
        raise DefinitionError(f"runtime {shown(runtime)} is not a command line", field="runtime")
    return " ".join(shlex.quote(w) for w in words)


def check_directory(directory: str) -> str:
    """Where the lockfile and the sticker go on the target (relative: to the login's home)."""
    check_text(directory, "directory", field="dir")
    value = directory.strip()
    if not value or len(value) > MAX_FIELD or any(c in value for c in "\r\n"):
        raise DefinitionError(f"directory {shown(directory)} is not a path", field="dir")
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise DefinitionError(
                f"label key {shown(key)}: use 1-63 characters a-z, A-Z, 0-9, '.', '_', '/' "
                "or '-', starting with a letter or digit",
                field="label",
            )
        check_text(value, f"label {key}", field="label")
        if len(value) > MAX_FIELD or any(c in value for c in "\r\n"):
            raise DefinitionError(f"label {key}: the value is not one short line", field="label")
    return dict(labels)
