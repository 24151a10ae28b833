"""Evidence packets: an in-toto Statement v1 in a DSSE envelope, carried as a Sigstore bundle v0.3.

Layers (standards.md A.1-A.5):

- the statement's bytes are RFC 8785 (JCS) canonical JSON, with no float anywhere, so the same
  decision always has the same payload digest;
- the signature is ECDSA P-256 / SHA-256 (DER) over the DSSE pre-authentication encoding
  `PAE(payloadType, payload)`, never over the payload alone;
- the bundle carries a `publicKey.hint` (our key id) and no transparency-log entries, which is
  what `cosign verify-blob-attestation --key … --insecure-ignore-tlog` expects offline, and what an
  auditor with only openssl can check by rebuilding the PAE.

Pure functions only: no database, no files, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.errors import DefinitionError, IntegrityError

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

# RFC 8785 numbers are IEEE 754 doubles: integers beyond 2**53 - 1 would silently lose precision
# in other verifiers, so they are refused (the same bound `rfc8785` enforces).
_INT_MAX = 2**53 - 1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
# Standard and URL-safe base64 must both be accepted (DSSE); map URL-safe onto standard.
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


class PacketError(IntegrityError):
    """A bundle failed verification. `check` names what failed, for reports:
    `bundle` (malformed), `media_type`, `payload_type`, `signer` (no trusted key),
    `signature`, `payload` (not canonical JSON), `statement`."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


# --- canonical JSON ------------------------------------------------------------------------------

# CPython's C encoder configured exactly like RFC 8785 for the value domain admitted below:
# sorted keys, no whitespace, UTF-8 text, only the mandatory escapes (it escapes U+0000-U+001F as
# lowercase \u00xx and uses the short forms \b \f \n \r \t, as JCS §3.2.2.2 does). Integers are
# limited to ±(2**53 - 1), where Python's and ECMAScript's number formatting agree. No circular
# check: values are walked before encoding. Built once, since building it per call shows on the
# signing path.
_SEPARATORS = (":", ",")


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


if json.encoder.c_make_encoder is not None:  # type: ignore[attr-defined]
    _c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _not_json, json.encoder.encode_basestring, None, *_SEPARATORS, True, False, False
    )

    def _encode_text(value: Any) -> str:
        return "".join(_c_encoder(value, 0))

else:  # pragma: no cover - interpreters without the C accelerator
    _ENCODER = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
    )

    def _encode_text(value: Any) -> str:
        return _ENCODER.encode(value)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of `value`. Refuses floats (and NaN/Infinity) anywhere, integers
    outside ±(2**53 - 1), non-string keys, and anything that is not JSON, with a DefinitionError:
    no float in a signed document."""
    try:
        if not _plain_json(value):
            check_json_value(value)  # raises, naming the path, or accepts subclasses and tuples
        return _encode_checked(value)
    except RecursionError as exc:
        raise DefinitionError("value is nested too deeply to be canonicalized") from exc


def _plain_json(value: Any) -> bool:
    """True when `value` is made only of exact dict/list/str/bool/None and in-range int.

    The fast check on the signing path: no path strings and no call per node. Anything unusual
    (floats, subclasses, tuples, cycles) answers False and goes to `check_json_value`, which
    either accepts it or says where the problem is."""
    stack = [value]
    pop, push = stack.pop, stack.append
    budget = 1_000_000  # a cyclic value exhausts it instead of looping forever
    while stack:
        budget -= 1
        if budget < 0:
            return False
        node = pop()
        kind = type(node)
        if kind is dict:
            for key, item in node.items():
                if type(key) is not str:
                    return False
                sub = type(item)
                if sub is str or sub is bool or item is None:
                    continue
                if sub is dict or sub is list:
                    push(item)
                elif sub is not int or not -_INT_MAX <= item <= _INT_MAX:
                    return False
        elif kind is list:
            for item in node:
                sub = type(item)
                if sub is str or sub is bool or item is None:
                    continue
                if sub is dict or sub is list:
                    push(item)
                elif sub is not int or not -_INT_MAX <= item <= _INT_MAX:
                    return False
        elif not (kind is str or kind is bool or node is None):
            return kind is int and -_INT_MAX <= node <= _INT_MAX
    return True


_SORTED = orjson.OPT_SORT_KEYS
# A UTF-8 lead byte of a character beyond U+FFFF.
_NON_BMP = re.compile(rb"[\xf0-\xf4]")


def _encode_checked(value: Any) -> bytes:
    """JCS of a value already known to be in the admitted domain.

    orjson first: sorted keys and compact separators, the same escapes as RFC 8785 for every
    code point, and the same integers in the admitted range, several times faster than the
    standard encoder. What it refuses (a lone surrogate, nesting beyond its limit) and what
    it would sort differently (a character beyond U+FFFF) takes the path below."""
    try:
        data = orjson.dumps(value, option=_SORTED)
    except orjson.JSONEncodeError:
        pass
    else:
        if data.isascii() or not _NON_BMP.search(data):
            return data
    text = _encode_text(value)
    if text.isascii():
        return text.encode("ascii")
    # Python sorts keys by code point, JCS by UTF-16 code unit; the two orders differ only when
    # a key holds a character beyond U+FFFF. Such documents go through the reference
    # implementation (slow, rare); everything else is byte-identical and several times faster.
    if max(text) > "\uffff":
        try:
            return rfc8785.dumps(value)
        except rfc8785.CanonicalizationError as exc:
            raise DefinitionError(f"value cannot be canonicalized (RFC 8785): {exc}") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DefinitionError("value holds a lone surrogate, which is not valid UTF-8") from exc


def check_json_value(value: Any, path: str = "$", _open: frozenset[int] = frozenset()) -> None:
    """Raise DefinitionError, naming the JSON path, unless `value` is JSON fit for signing:
    objects with string keys, arrays (lists or tuples), strings, booleans, None, and integers
    within ±(2**53 - 1). Subclasses (StrEnum, IntEnum) count as their base type."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if isinstance(value, dict | list | tuple):
        if id(value) in _open:
            raise DefinitionError(f"value at {path} contains itself")
        inner = _open | {id(value)}
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise DefinitionError(f"object key {key!r} at {path} is not a string")
                check_json_value(item, f"{path}.{key}", inner)
        else:
            for index, item in enumerate(value):
                check_json_value(item, f"{path}[{index}]", inner)
    elif isinstance(value, float):
        raise DefinitionError(
            f"float at {path}: no float in a signed document "
            '(use an integer in a stated unit, or a string such as "9.8")'
        )
    elif isinstance(value, bool | str):
        pass
    elif isinstance(value, int):
        if not -_INT_MAX <= value <= _INT_MAX:
            raise DefinitionError(
                f"integer at {path} is outside ±(2**53 - 1) and cannot be represented exactly "
                "in JSON; store it as a string"
            )
    else:
        raise DefinitionError(f"value at {path} of type {kind.__name__} is not JSON")


# --- DSSE ----------------------------------------------------------------------------------------


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding:
    `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII decimal byte counts."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (what protobuf JSON and cosign emit)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not; raises ValueError for anything else."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not a base64 string")
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE_TO_STD)
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        # strict mode refuses characters outside the alphabet and data after the padding.
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("not valid base64") from exc


# --- in-toto Statement v1 ------------------------------------------------------------------------


def sha256_hex(digest: str) -> str:
    """The hex part of `sha256:<hex>` or of a bare `<hex>`; 64 lowercase hex characters."""
    if not isinstance(digest, str):
        raise DefinitionError(f"digest {digest!r} is not a string")
    hex_part = digest[7:] if digest.startswith("sha256:") else digest
    if not _SHA256_HEX.fullmatch(hex_part):
        raise DefinitionError(
            f"digest {digest!r} is not sha256:<64 lowercase hex> (or the bare hex)"
        )
    return hex_part


def digest_set(digest: str) -> dict[str, str]:
    """An in-toto DigestSet for a SHA-256 digest: `{"sha256": "<hex>"}`."""
    return {"sha256": sha256_hex(digest)}


def is_uri(text: object) -> bool:
    return isinstance(text, str) and _URI.fullmatch(text) is not None


def statement(
    subjects: Iterable[tuple[str, str]], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """An in-toto Statement v1 over `subjects` (name, `sha256:<hex>` or hex).

    Subjects are matched by digest, so their order carries no meaning: they are sorted (and exact
    duplicates dropped) to keep the payload identical for the same set."""
    pairs: set[tuple[str, str]] = set()
    for item in subjects:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise DefinitionError(f"subject {item!r} is not a (name, digest) pair")
        name, digest = item
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"subject name {name!r} must be a non-empty string ('_' if none)")
        pairs.add((name, sha256_hex(digest)))
    if not pairs:
        raise DefinitionError("a statement needs at least one subject")
    if not is_uri(predicate_type):
        raise DefinitionError(f"predicate type {predicate_type!r} is not a URI")
    if type(predicate) is not dict and not isinstance(predicate, Mapping):
        raise DefinitionError("the predicate must be a JSON object")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": h}} for n, h in sorted(pairs)],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def _statement_problem(value: Any) -> str | None:
    """What is wrong with a statement's shape, or None. Shared by signing and verification."""
    if not isinstance(value, dict):
        return "the statement is not a JSON object"
    if value.get("_type") != STATEMENT_TYPE:
        return f"statement _type is {value.get('_type')!r}, expected {STATEMENT_TYPE!r}"
    subjects = value.get("subject")
    if not isinstance(subjects, list) or not subjects:
        return "statement has no subject"
    for index, subject in enumerate(subjects):
        digest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
            return f"statement subject[{index}] has no sha256 digest"
        if not _SHA256_HEX.fullmatch(digest["sha256"]):
            return f"statement subject[{index}] sha256 digest is not 64 lowercase hex"
        if "name" in subject and not isinstance(subject["name"], str):
            return f"statement subject[{index}] name is not a string"
    if not is_uri(value.get("predicateType")):
        return "statement predicateType is missing or not a URI"
    if not isinstance(value.get("predicate"), dict):
        return "statement predicate is missing or not a JSON object"
    return None


# --- Sigstore bundle v0.3 ------------------------------------------------------------------------


def sign_statement(
    statement: Mapping[str, Any], key: SigningKey, *, deterministic: bool = False
) -> dict[str, Any]:
    """Sign `statement` and return the Sigstore bundle v0.3 JSON object carrying it.

    The payload is the statement's JCS bytes; the signature covers PAE(payloadType, payload);
    the signature's `keyid` and the `publicKey.hint` both hold the key id (securesystemslib only
    tries keys whose id matches `keyid`, cosign ignores it). `deterministic` signs with an
    RFC 6979 nonce, so the same statement and key give the same bundle bytes."""
    value = statement if type(statement) is dict else dict(statement)
    problem = _statement_problem(value)
    if problem:
        raise DefinitionError(f"cannot sign: {problem}")
    payload = canonical_json(value)
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload), deterministic=deterministic)
    key_id = key.key_id
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_id}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64encode(payload),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64encode(signature), "keyid": key_id}],
        },
    }


def bundle_digest(bundle: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the bundle's canonical JSON (the bytes to store it as)."""
    return "sha256:" + hashlib.sha256(bundle_bytes(bundle)).hexdigest()


def bundle_bytes(bundle: Mapping[str, Any]) -> bytes:
    """The bundle's canonical JSON: what a `.sigstore.json` file of it holds."""
    return _standard_bundle_bytes(bundle) or canonical_json(bundle)


_BUNDLE_KEYS = {"mediaType", "verificationMaterial", "dsseEnvelope"}
_ENVELOPE_KEYS = {"payload", "payloadType", "signatures"}
_SIGNATURE_KEYS = {"sig", "keyid"}


def _pastes_verbatim(text: object) -> bool:
    """A string whose JSON form is itself in quotes: printable ASCII without `"` or `\\`.
    (Plain C scans; a regex over the long payload costs more than the encoder saved.)"""
    return (
        type(text) is str
        and text.isascii()
        and text.isprintable()
        and '"' not in text
        and "\\" not in text
    )


def _standard_bundle_bytes(bundle: Any) -> bytes | None:
    """JCS of a bundle exactly as `sign_statement` makes it, assembled without the generic
    encoder (whose escaping pass over the long base64 payload dominates); None for any other
    shape, which then takes the generic path. The output is the same bytes either way."""
    try:
        if bundle.keys() != _BUNDLE_KEYS or bundle["mediaType"] != BUNDLE_MEDIA_TYPE:
            return None
        material, envelope = bundle["verificationMaterial"], bundle["dsseEnvelope"]
        if material != {"publicKey": {"hint": material["publicKey"]["hint"]}, "tlogEntries": []}:
            return None
        hint = material["publicKey"]["hint"]
        if envelope.keys() != _ENVELOPE_KEYS or envelope["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
            return None
        (signature,) = envelope["signatures"]
        if signature.keys() != _SIGNATURE_KEYS:
            return None
        payload, sig, keyid = envelope["payload"], signature["sig"], signature["keyid"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    # Only strings that need no escaping may be pasted in as they are.
    if not (
        _pastes_verbatim(payload)
        and _pastes_verbatim(sig)
        and _pastes_verbatim(hint)
        and _pastes_verbatim(keyid)
    ):
        return None
    return (
        f'{{"dsseEnvelope":{{"payload":"{payload}","payloadType":"{IN_TOTO_PAYLOAD_TYPE}",'
        f'"signatures":[{{"keyid":"{keyid}","sig":"{sig}"}}]}},"mediaType":"{BUNDLE_MEDIA_TYPE}",'
        f'"verificationMaterial":{{"publicKey":{{"hint":"{hint}"}},"tlogEntries":[]}}}}'
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class VerifiedPacket:
    """What a verified bundle proves: `signer_key_id` signed exactly `payload`, which is the
    canonical JSON of `statement`."""

    statement: dict[str, Any]
    payload: bytes
    signer_key_id: str
    bundle_digest: str

    @property
    def predicate_type(self) -> str:
        value: str = self.statement["predicateType"]
        return value

    @property
    def predicate(self) -> dict[str, Any]:
        value: dict[str, Any] = self.statement["predicate"]
        return value

    @property
    def payload_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.payload).hexdigest()

    def subject_digests(self) -> list[str]:
        """The subjects' digests as `sha256:<hex>`, in statement order."""
        return ["sha256:" + s["digest"]["sha256"] for s in self.statement["subject"]]


def _trusted(keys: Mapping[str, PublicKey] | Sequence[PublicKey]) -> dict[str, PublicKey]:
    # `values` rather than an isinstance(Mapping) check: the ABC check costs more than the rest.
    values = keys.values() if hasattr(keys, "values") else keys
    # Ids are recomputed from the keys: a mapping's own labels are not trusted either.
    trusted = {key.key_id: key for key in values}
    if not trusted:
        raise PacketError("signer", "no trusted public keys were given")
    return trusted


def _field(container: Any, name: str, kind: type, where: str) -> Any:
    value = container.get(name) if isinstance(container, dict) else None
    if not isinstance(value, kind):
        raise PacketError(
            "bundle", f"malformed bundle: {where}{name} is missing or not a {_json_kind(kind)}"
        )
    return value


_KIND_NAMES: dict[type, str] = {dict: "JSON object", list: "JSON array", str: "string"}


def _json_kind(kind: type) -> str:
    return _KIND_NAMES.get(kind, kind.__name__)


def _refuse_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")


def _parse_int(text: str) -> int:
    value = int(text)
    if not -_INT_MAX <= value <= _INT_MAX:
        raise ValueError(f"integer {text} is outside ±(2**53 - 1)")
    return value


# Parsing refuses floats, NaN/Infinity and oversized integers at the source, so the parsed value
# is in canonical_json's domain without another walk.
_DECODER = json.JSONDecoder(
    parse_float=_refuse_float, parse_int=_parse_int, parse_constant=_refuse_float
)


def verify_bundle(
    bundle: Mapping[str, Any],
    keys: Mapping[str, PublicKey] | Sequence[PublicKey],
    *,
    raw_digest: str | None = None,
) -> VerifiedPacket:
    """Verify a Sigstore bundle v0.3 against trusted public keys; raise PacketError (an
    IntegrityError) naming what failed.

    The key id hint is not trusted: the hinted key is only tried first, then every other trusted
    key, so a hint pointing at the wrong trusted key changes nothing."""
    trusted = _trusted(keys)
    if not isinstance(bundle, dict):
        raise PacketError("bundle", "malformed bundle: not a JSON object")
    media_type = bundle.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise PacketError(
            "media_type", f"bundle mediaType is {media_type!r}, expected {BUNDLE_MEDIA_TYPE!r}"
        )
    material = _field(bundle, "verificationMaterial", dict, "")
    if "publicKey" not in material or {"certificate", "x509CertificateChain"} & material.keys():
        # A oneof in the protobuf: exactly one kind of material. Ours is the public-key hint.
        raise PacketError(
            "bundle",
            "bundle verification material must be a publicKey hint alone "
            "(certificate-based bundles are not evidence packets)",
        )
    public_key = _field(material, "publicKey", dict, "verificationMaterial.")
    if "messageSignature" in bundle:
        raise PacketError("bundle", "bundle holds a messageSignature, not a dsseEnvelope")
    envelope = _field(bundle, "dsseEnvelope", dict, "")
    payload_type = _field(envelope, "payloadType", str, "dsseEnvelope.")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise PacketError(
            "payload_type",
            f"payloadType is {payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
        )
    signatures = _field(envelope, "signatures", list, "dsseEnvelope.")
    if len(signatures) != 1:
        # A Sigstore bundle carries exactly one signature; several would need a threshold policy.
        raise PacketError(
            "bundle", f"malformed bundle: expected exactly one signature, found {len(signatures)}"
        )
    sig_text = _field(signatures[0], "sig", str, "dsseEnvelope.signatures[0].")
    try:
        payload = b64decode(_field(envelope, "payload", str, "dsseEnvelope."))
        signature = b64decode(sig_text)
    except ValueError as exc:
        raise PacketError("bundle", f"malformed bundle: {exc} in payload or signature") from exc

    hints = [signatures[0].get("keyid"), public_key.get("hint")]
    signed = pae(payload_type, payload)
    signer = _find_signer(trusted, hints, signature, signed)
    if signer is None:
        hint = next((h for h in hints if isinstance(h, str) and h), None)
        if hint is not None and hint in trusted:
            raise PacketError(
                "signature",
                f"bad signature: it verifies with neither the hinted trusted key {hint[:16]}… "
                "nor any other trusted key",
            )
        named = f"the hint names key {str(hint)[:16]}…, which is not trusted" if hint else "no hint"
        raise PacketError(
            "signer", f"unknown signer: no trusted key verifies the signature ({named})"
        )

    statement = _parse_payload(payload)
    problem = _statement_problem(statement)
    if problem:
        raise PacketError("statement", problem)
    return VerifiedPacket(
        statement=statement,
        payload=payload,
        signer_key_id=signer,
        # A caller that read the bundle from bytes already hashed them (a capsule's verifier).
        bundle_digest=raw_digest or bundle_digest(bundle),
    )


def _find_signer(
    trusted: dict[str, PublicKey], hints: list[object], signature: bytes, signed: bytes
) -> str | None:
    tried: set[str] = set()
    for hint in hints:
        if isinstance(hint, str) and hint in trusted and hint not in tried:
            if trusted[hint].verify(signature, signed):
                return hint
            tried.add(hint)
    for key_id, key in trusted.items():
        if key_id not in tried and key.verify(signature, signed):
            return key_id
    return None


# In canonical output a number follows `:`, `,` or `[`; one with a fraction or an exponent (a
# float) sends the payload to the exact path (inside a string the same characters only cost the
# fast path). Integers beyond ±(2**53 - 1) are refused by the re-encoding itself.
_FLOAT_TOKEN = re.compile(rb"[:,\[]-?[0-9]+[.eE]")
_STRICT = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _parse_payload(payload: bytes) -> Any:
    """The statement a payload holds, refusing anything that is not JCS without floats.

    Fast path: orjson parses, and re-encoding gives back exactly the payload, with no float,
    no integer beyond ±(2**53 - 1) and no character beyond U+FFFF in it: then it is
    canonical. Anything else
    (including every malformed payload) is decided, and its problem named, by the exact path."""
    try:
        value = orjson.loads(payload)
        again: bytes | None = orjson.dumps(value, option=_STRICT)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        again = None
    if (
        again == payload
        and not _FLOAT_TOKEN.search(payload)
        and (payload.isascii() or not _NON_BMP.search(payload))
    ):
        return value
    return _parse_payload_exactly(payload)


def _parse_payload_exactly(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
        value = _DECODER.decode(text)
        # Re-encoding catches whitespace, key order, duplicate keys (parsing keeps only the
        # last) and non-minimal escapes or numbers. ASCII text compares as text, saving a copy.
        same = _encode_text(value) == text if text.isascii() else _encode_checked(value) == payload
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PacketError("payload", f"payload is not JSON without floats: {exc}") from exc
    except DefinitionError as exc:
        raise PacketError("payload", f"payload is not canonical JSON: {exc.message}") from exc
    if not same:
        raise PacketError("payload", "payload is not canonical JSON (RFC 8785)")
    return value
