"""`stella evidence …` and `stella keys …`.

`evidence verify ARCHIVE` and `evidence replay ARCHIVE` never open a database: they are what an
auditor runs on a laptop with only the archive and the public keys they were given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from stella_core.cli.common import (
    Leaf,
    acting,
    ask_passphrase,
    new_passphrase,
    number_flag,
    out,
    output_file,
    time_flag,
)
from stella_core.errors import DefinitionError, IntegrityError, StellaError
from stella_core.limits import MAX_LIST_ROWS, load_json, read_bounded, read_text

MAX_KEY_BYTES = 64 * 1024  # a PEM public key is a few hundred bytes
MAX_POLICY_BYTES = 1024 * 1024


class VerificationFailed(IntegrityError):
    """Verification or replay found problems (already printed)."""


def _uuid(text: str | None, flag: str) -> UUID | None:
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError as exc:
        raise DefinitionError(f"{flag} {text!r} is not an id (UUID)") from exc


def _trusted_keys(paths: list[str]) -> list[Any] | None:
    from stella_core.crypto.keys import PublicKey

    keys = []
    for path in paths:
        data = read_bounded(path, MAX_KEY_BYTES, "trusted key")
        try:
            keys.append(PublicKey.from_pem(data))
        except StellaError as exc:
            raise DefinitionError(f"trusted key {path}: {exc.message}") from exc
    return keys or None


def _archive(path: str) -> Path:
    """A capsule to read: a regular file (a device or a pipe is no archive; tar reads a file
    entry by entry, each under its own cap)."""
    found = Path(path)
    if not found.exists():
        raise DefinitionError(f"no archive at {path}")
    if not found.is_file():
        raise DefinitionError(f"{path} is not an archive: not a regular file")
    return found


def _read_policy(path: str | None) -> Any:
    if path is None:
        return None
    from stella_core.promotions.decision import check_policy

    raw = read_text(path, MAX_POLICY_BYTES, "policy")
    return check_policy(load_json(raw, f"policy {path}"))


# ------------------------------------------------------------------------------- evidence
def cmd_evidence_list(args: argparse.Namespace) -> None:
    from stella_core.evidence.model import Filter

    where = Filter(
        type=args.type,
        release=args.release,
        environment=args.environment,
        person=args.person,
        run_id=_uuid(args.run, "--run"),
        promotion_id=_uuid(args.promotion, "--promotion"),
        since=time_flag(args.since, "--since") if args.since else None,
        until=time_flag(args.until, "--until") if args.until else None,
        limit=args.limit,
    )
    with acting(args) as stella:
        rows = stella.evidence.find(where)
    value = [r.to_json() for r in rows]
    lines = [
        f"#{r.seq:<6} {r.type:10} {r.created_at:%Y-%m-%d %H:%M:%S}  {r.id}  "
        f"{r.release or '-'}  by {r.actor}"
        for r in rows
    ]
    out(args, value, lines or ["no evidence packets"])


def cmd_evidence_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        detail = stella.evidence.get(args.packet_id)
    if not args.bundle:
        detail.pop("bundle", None)
    statement = detail.get("statement") or {}
    lines = [
        f"packet {detail['id']} (#{detail['seq']}, {detail['type']})",
        f"  verified:  {'yes' if detail['verified'] else 'NO: ' + str(detail['problem'])}",
        f"  signer:    {detail['signer_key_id']} ({(detail.get('signer') or {}).get('owner')})",
        f"  chain:     {'ok' if detail['chain_ok'] else 'BROKEN'}; "
        f"checkpoint {detail['checkpoint'] or 'none yet'}",
        f"  subjects:  {', '.join(detail['subject_digests'])}",
        json.dumps(statement.get("predicate"), indent=2),
    ]
    out(args, detail, lines)


def _check_selection_flags(selection: Any) -> None:
    """The export's selection rules, said with this command's flags (the core says them in
    words, for the desktop too)."""
    given = [
        selection.promotion_id is not None,
        selection.release is not None,
        selection.run_id is not None,
        selection.since is not None or selection.until is not None,
    ]
    if sum(given) != 1:
        raise DefinitionError(
            "choose one selection: --promotion ID, --release NAME, --run ID, "
            "or --since ISO --until ISO"
        )
    if (selection.since is None) != (selection.until is None):
        raise DefinitionError("a time range needs both --since and --until")
    if selection.since is not None and selection.since >= selection.until:
        raise DefinitionError("--since must be before --until")


def cmd_evidence_export(args: argparse.Namespace) -> None:
    from stella_core.evidence.service import Selection

    selection = Selection(
        promotion_id=_uuid(args.promotion, "--promotion"),
        release=args.release,
        run_id=_uuid(args.run, "--run"),
        since=time_flag(args.since, "--since") if args.since else None,
        until=time_flag(args.until, "--until") if args.until else None,
    )
    _check_selection_flags(selection)
    selection.check()
    target = output_file(args.out, "--out")
    with acting(args) as stella:
        summary = stella.evidence.export(selection, target)
    out(
        args,
        summary,
        [f"exported {summary['packets']} packets to {summary['out']} ({summary['digest']})"],
    )


def _verify_lines(value: dict[str, Any]) -> list[str]:
    checked = ", ".join(f"{k} {v}" for k, v in value["checked"].items())
    head = "OK" if value["ok"] else f"FAILED: {len(value['problems'])} problem(s)"
    lines = [f"{head} ({value.get('packets', 0)} packets; checked {checked})"]
    lines.append(f"trust: {value.get('trust')}")
    lines += [f"  [{p['check']}] {p['packet'] or '-'}: {p['message']}" for p in value["problems"]]
    return lines


def cmd_evidence_verify(args: argparse.Namespace) -> None:
    from stella_core.evidence.capsule import read_tar
    from stella_core.evidence.verify import verify_capsule

    if args.ledger == (args.archive is not None):
        raise DefinitionError("give an ARCHIVE to verify, or --ledger for the live ledger")
    if args.ledger:
        with acting(args) as stella:
            report = stella.evidence.verify_ledger()
    else:
        path = _archive(args.archive)
        # All cores: signature checks dominate and each packet's are independent.
        report = verify_capsule(
            read_tar(path),
            _trusted_keys(args.trusted_key),
            jobs=os.cpu_count() or 1,
            keep_verified=False,
        )
    value = report.to_json()
    out(args, value, _verify_lines(value))
    if not report.ok:
        raise VerificationFailed(f"verification found {len(report.problems)} problem(s)")


def cmd_evidence_replay(args: argparse.Namespace) -> None:
    policy = _read_policy(args.policy)
    target = Path(args.target)
    if target.exists():
        target = _archive(args.target)
        from stella_core.evidence.capsule import read_tar
        from stella_core.evidence.service import replay_capsule
        from stella_core.promotions.decision import replay as replay_decision

        value = replay_capsule(
            read_tar(target), _trusted_keys(args.trusted_key), policy, decisions=replay_decision
        )
    else:
        packet_id = _uuid(args.target, "packet id")
        if packet_id is None or "/" in args.target:
            raise DefinitionError(f"{args.target} is neither an archive nor a packet id")
        with acting(args) as stella:
            value = stella.evidence.replay(packet_id, policy)
    lines = ["same" if value["same"] else "DIFFERENT"]
    lines += [
        f"  {d['packet']}: {d['kind']} {d['name']}: recorded {d['recorded']!r}, "
        f"replayed {d['replayed']!r}"
        for d in value["differences"]
    ]
    lines += [f"  not verified: {u['packet']}: {u['message']}" for u in value.get("unverified", [])]
    out(args, value, lines)
    # A what-if policy is expected to differ; without one, a difference is a failure.
    if policy is None and not value["same"]:
        raise VerificationFailed("replay differs from what was recorded")


def cmd_evidence_checkpoint(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        row = stella.evidence.checkpoint()
    value = row.to_json()
    out(args, value, [value["note"].rstrip("\n")])


# ------------------------------------------------------------------------------- keys
def cmd_keys_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        keys = stella.evidence.signing_keys()
    active: dict[str, str] = {}
    for k in keys:
        active[k.owner] = k.key_id  # registered order: the last one wins
    value = [{**k.to_json(), "active": active[k.owner] == k.key_id} for k in keys]
    lines = [
        f"{k.key_id[:16]}…  {k.owner:16} {'active' if active[k.owner] == k.key_id else 'retired'}"
        f"  registered {k.registered_at:%Y-%m-%d %H:%M} by {k.registered_by}"
        for k in keys
    ]
    out(args, value, lines or ["no keys registered"])


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        key = stella.evidence.rotate_key(orchestrator=args.orchestrator)
    out(args, key.to_json(), [f"{key.owner}: new active key {key.key_id}"])


def cmd_keys_passphrase(args: argparse.Namespace) -> None:
    from stella_core.tenancy.keys import person_key_name

    with acting(args) as stella:
        me = stella.tenancy.whoami()
        keys = stella.local_keys
        if keys.protected(me.user) and keys.held(person_key_name(me.user)):
            # The current passphrase first, as ssh-keygen -p asks: wrong, and nothing changes.
            keys.unlock(me.user, ask_passphrase(me.user))
        value = stella.evidence.protect_personal_key(new_passphrase(me.user))
    files = value["key_files"]
    out(
        args,
        value,
        [
            f"{value['person']}'s signing key ({files} key file{'s' if files != 1 else ''}) is "
            "now protected by their own passphrase"
        ],
    )


def cmd_keys_export(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        keys = stella.evidence.signing_keys()
    if args.key_id:
        found = [k for k in keys if k.key_id.startswith(args.key_id)]
    else:
        owned = [k for k in keys if k.owner == (args.owner or "orchestrator")]
        found = owned[-1:]
    if len(found) != 1:
        raise DefinitionError("no single registered key matches; see 'stella keys list'")
    pem = found[0].public_key.pem()
    if args.out:
        output_file(args.out, "--out").write_bytes(pem)
        print(f"wrote {found[0].owner}'s key {found[0].key_id} to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(pem.decode("ascii"))


def group_evidence(groups: Any, leaf: Leaf, help_: str) -> None:
    ev = groups.add_parser("evidence", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(ev, "list", cmd_evidence_list, "list evidence packets")
    p.add_argument("--type", default=None, help="vsa, approval, deployment, rollback, drift, run")
    p.add_argument("--release", default=None)
    p.add_argument("--environment", default=None)
    p.add_argument("--person", default=None, help="who emitted it")
    p.add_argument("--run", default=None, help="a workflow run id")
    p.add_argument("--promotion", default=None, help="a promotion id")
    p.add_argument("--since", default=None, help="ISO 8601 time, inclusive")
    p.add_argument("--until", default=None, help="ISO 8601 time, exclusive")
    p.add_argument("--limit", type=number_flag(1, MAX_LIST_ROWS), default=None)
    p = leaf(ev, "show", cmd_evidence_show, "one packet decoded and checked")
    p.add_argument("packet_id")
    p.add_argument("--bundle", action="store_true", help="include the bundle JSON")
    p = leaf(ev, "export", cmd_evidence_export, "export a decision capsule (deterministic tar)")
    p.add_argument("--promotion", default=None)
    p.add_argument("--release", default=None)
    p.add_argument("--run", default=None)
    p.add_argument("--since", default=None)
    p.add_argument("--until", default=None)
    p.add_argument("--out", type=str, required=True, help="FILE.tar")
    p = leaf(ev, "verify", cmd_evidence_verify, "verify a capsule offline (or --ledger)")
    p.add_argument("archive", type=str, nargs="?", default=None)
    p.add_argument("--trusted-key", type=str, action="append", default=[], metavar="PEM")
    p.add_argument("--ledger", action="store_true", help="verify the live ledger instead")
    p = leaf(ev, "replay", cmd_evidence_replay, "re-evaluate decisions from recorded inputs")
    p.add_argument("target", type=str, help="FILE.tar or a packet id")
    p.add_argument(
        "--policy", type=str, default=None, help="evaluate this policy instead (what if)"
    )
    p.add_argument("--trusted-key", type=str, action="append", default=[], metavar="PEM")
    leaf(ev, "checkpoint", cmd_evidence_checkpoint, "seal the ledger with a signed checkpoint")


def group_keys(groups: Any, leaf: Leaf, help_: str) -> None:
    keys = groups.add_parser("keys", help=help_).add_subparsers(dest="cmd", required=True)
    leaf(keys, "list", cmd_keys_list, "registered public keys")
    p = leaf(keys, "rotate", cmd_keys_rotate, "create and register a new key")
    p.add_argument("--orchestrator", action="store_true", help="the orchestrator's (admins)")
    leaf(
        keys,
        "passphrase",
        cmd_keys_passphrase,
        "set or change your own passphrase on your signing key (read from the terminal twice, "
        "or one line of standard input); signing then needs it (STELLA_PASSPHRASE or a prompt)",
    )
    p = leaf(keys, "export", cmd_keys_export, "print a registered public key (PEM)")
    p.add_argument("--owner", default=None, help="person name (default: the orchestrator)")
    p.add_argument("--key-id", default=None)
    p.add_argument("--out", type=str, default=None)


GROUPS = {"evidence": group_evidence, "keys": group_keys}
