"""`stella registry …`, `stella component …`, `stella release …`."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import Leaf, UsageError, acting, show


def _registry_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "url": r.url,
        "kind": r.kind.value,
        "username": r.username,
        "has_password": r.has_password,
        "insecure": r.insecure,
        "created_at": r.created_at.isoformat(),
    }


def cmd_registry_add(args: argparse.Namespace) -> None:
    from stella_core.cli.common import secret_line

    password = None
    if args.password_stdin:
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        password = secret_line("the password")
        if not password:
            raise UsageError("no password on standard input")
    elif args.username:
        raise UsageError("--username needs --password-stdin (passwords are never taken as flags)")
    with acting(args) as stella:
        reg = stella.releases.add_registry(
            args.name, args.url, username=args.username, password=password, insecure=args.insecure
        )
    show(args, _registry_json(reg), lambda: [f"added registry {reg.name} ({reg.url})"])


def cmd_registry_remove(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        reg = stella.releases.remove_registry(args.name)
    show(args, _registry_json(reg), lambda: [f"removed registry {reg.name} ({reg.url})"])


def cmd_registry_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        regs = stella.releases.list_registries()
    show(args, [_registry_json(r) for r in regs], lambda: [f"{r.name:20} {r.url}" for r in regs])


def _component_json(c: Any) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "name": c.name,
        "registry": c.registry,
        "repository": c.repository,
        "service": c.service,
        "created_at": c.created_at.isoformat(),
    }


def cmd_component_add(args: argparse.Namespace) -> None:
    service = None
    if args.service is not None:
        from stella_core.limits import read_bounded
        from stella_core.releases.compose import MAX_FRAGMENT_BYTES, parse_service_fragment

        # Read (and checked) before anything is opened: a bad file changes nothing.
        text = read_bounded(args.service, MAX_FRAGMENT_BYTES, "the service file")
        service = parse_service_fragment(text, f"the service file {args.service}")
    others = (args.health_expect_status, args.health_interval, args.health_timeout)
    if args.health_url is None and any(v is not None for v in others):
        raise UsageError("the other --health-* flags go with --health-url")
    if args.health_url is not None:
        from stella_core.deploy.health import HEALTH_KEY, health_of

        check: dict[str, Any] = {"url": args.health_url}
        for key in ("expect_status", "interval", "timeout"):
            value = getattr(args, f"health_{key}")
            if value is not None:
                check[key] = value
        service = {**(service or {}), HEALTH_KEY: check}
        health_of(args.name, service)  # checked before anything is opened
    with acting(args) as stella:
        comp = stella.releases.add_component(args.name, args.image, service)
    show(
        args,
        _component_json(comp),
        lambda: [f"added component {comp.name} ({comp.registry}/{comp.repository})"],
    )


def cmd_component_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        comps = stella.releases.list_components()
    show(
        args,
        [_component_json(c) for c in comps],
        lambda: [f"{c.name:20} {c.registry}/{c.repository}" for c in comps],
    )


def _release_lines(rel: Any) -> list[str]:
    lines = [f"{rel.name}  created {rel.created_at:%Y-%m-%d %H:%M:%S} by {rel.created_by}"]
    lines += [f"  {c.name:16} {c.tag or '-':16} {c.digest}" for c in rel.components]
    return lines


def cmd_release_create(args: argparse.Namespace) -> None:
    from stella_core.releases.model import ComponentPin
    from stella_core.releases.reference import check_release_name, parse_component_pin

    check_release_name(args.name)
    if not args.component:
        raise UsageError("give at least one --component COMPONENT=TAG_OR_DIGEST")
    pins = []
    for raw in args.component:
        name, tag, digest = parse_component_pin(raw)
        pins.append(ComponentPin(component=name, tag=tag, digest=digest))
    with acting(args) as stella:
        rel = stella.releases.create_release(args.name, pins)
    show(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        rel = stella.releases.get_release(args.name)
    show(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        rels = stella.releases.list_releases()
    show(
        args,
        [r.to_json() for r in rels],
        lambda: [
            f"{r.name:24} {r.created_at:%Y-%m-%d %H:%M} {r.created_by:12} "
            f"{len(r.components)} components"
            for r in rels
        ],
    )


def group_registry(groups: Any, leaf: Leaf, help_: str) -> None:
    reg = groups.add_parser("registry", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(reg, "add", cmd_registry_add, "add a registry or an OCI layout directory")
    p.add_argument("name")
    p.add_argument("--url", required=True)
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP (the password then goes over it, to this registry's own host "
        "only) and skip TLS certificate verification",
    )
    leaf(reg, "list", cmd_registry_list, "list registries")
    p = leaf(reg, "remove", cmd_registry_remove, "remove a registry no component uses")
    p.add_argument("name")


def group_component(groups: Any, leaf: Leaf, help_: str) -> None:
    comp = groups.add_parser("component", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(comp, "add", cmd_component_add, "add a component")
    p.add_argument("name")
    p.add_argument("--image", required=True, help="REGISTRY_NAME/REPOSITORY")
    p.add_argument(
        "--service",
        metavar="FILE",
        help="its compose service as YAML or JSON, without image (ports, environment, volumes, "
        "network_mode, healthcheck); - reads standard input",
    )
    p.add_argument(
        "--health-url",
        metavar="URL",
        help="an HTTP check asked on each target after a deployment ({target}: its name)",
    )
    p.add_argument("--health-expect-status", type=int, default=None, metavar="CODE")
    p.add_argument("--health-interval", type=float, default=None, metavar="SECONDS")
    p.add_argument(
        "--health-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a target has to become healthy (default 30)",
    )
    leaf(comp, "list", cmd_component_list, "list components")


def group_release(groups: Any, leaf: Leaf, help_: str) -> None:
    rel = groups.add_parser("release", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(rel, "create", cmd_release_create, "create an immutable release")
    p.add_argument("name")
    p.add_argument("--component", action="append", default=[], metavar="COMPONENT=TAG_OR_DIGEST")
    p = leaf(rel, "show", cmd_release_show, "show a release")
    p.add_argument("name")
    leaf(rel, "list", cmd_release_list, "list releases")


GROUPS = {"registry": group_registry, "component": group_component, "release": group_release}
