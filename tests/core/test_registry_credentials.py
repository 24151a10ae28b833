"""Where a registry's credentials may go: over HTTPS, or plain HTTP to an insecure registry's
own host; never to a plain-HTTP token endpoint elsewhere."""

from __future__ import annotations

import pytest

from stella_core.releases.oci import may_send_credentials


@pytest.mark.parametrize(
    ("registry", "insecure", "target", "allowed"),
    [
        # Docker Hub: the token endpoint is another host, over HTTPS.
        ("https://registry-1.docker.io", False, "https://auth.docker.io/token", True),
        ("https://reg.example", False, "https://reg.example/v2/", True),
        ("https://reg.example", True, "https://auth.example/token", True),
        # Plain HTTP: only to the registry's own host, and only when it was added as insecure.
        ("http://reg.example:5000", False, "http://reg.example:5000/v2/", False),
        ("http://reg.example:5000", True, "http://reg.example:5000/v2/", True),
        ("http://127.0.0.1:5000", True, "http://127.0.0.1:5001/token", True),
        ("https://reg.example", False, "http://reg.example/token", False),
        ("http://127.0.0.1:5000", True, "http://127.0.0.2:5001/token", False),
        ("https://reg.example", True, "http://auth.example/token", False),
        ("http://reg.example", True, "http://REG.example.evil/token", False),
        # Anything else is not a place for a password.
        ("http://reg.example", True, "ftp://reg.example/token", False),
        ("http://reg.example", True, "http://[::1/token", False),
        ("http://reg.example", True, "/token", False),
    ],
)
def test_where_credentials_go(registry, insecure, target, allowed) -> None:
    assert may_send_credentials(registry, insecure, target) is allowed
