"""`stella-agent`: the daemon on a target. The entry point exists; the daemon comes later."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "stella-agent: the agent daemon (gRPC over mutual TLS) is not part of this version yet; "
        "targets cannot enroll.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
