"""Evidence packets: JCS, DSSE PAE, in-toto statements, Sigstore bundles, and what an auditor with
only openssl can check."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.errors import DefinitionError, IntegrityError
from stella_core.evidence.packets import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_TYPE,
    PacketError,
    VerifiedPacket,
    b64decode,
    bundle_bytes,
    bundle_digest,
    canonical_json,
    pae,
    sign_statement,
    statement,
    verify_bundle,
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")
PREDICATE_TYPE = "https://stella-desk.dev/evidence/run/v1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def stmt() -> dict[str, Any]:
    return statement(
        [("api", "sha256:" + sha("api")), ("web", sha("web"))],
        PREDICATE_TYPE,
        {"runId": "3f1c", "status": "succeeded", "attempts": 2, "note": "ünïcödé €"},
    )


@pytest.fixture
def bundle(stmt: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    return sign_statement(stmt, key)


def reencode(bundle: dict[str, Any], payload: bytes | None = None, sig: bytes | None = None):
    """A copy of `bundle` with its payload and/or signature bytes replaced."""
    out = copy.deepcopy(bundle)
    env = out["dsseEnvelope"]
    if payload is not None:
        env["payload"] = base64.b64encode(payload).decode()
    if sig is not None:
        env["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    return out


def payload_of(bundle: dict[str, Any]) -> bytes:
    return base64.b64decode(bundle["dsseEnvelope"]["payload"])


def sig_of(bundle: dict[str, Any]) -> bytes:
    return base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])


def signed_raw(payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE):
    """A bundle whose signature is valid over arbitrary payload bytes (to reach later checks)."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.key_id}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [
                {"sig": base64.b64encode(key.sign(pae(payload_type, payload))).decode()}
            ],
        },
    }


# --- PAE -------------------------------------------------------------------------------------


def test_pae_spec_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t/ü", "é".encode()) == b"DSSEv1 4 t/\xc3\xbc 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


# --- JCS (RFC 8785) --------------------------------------------------------------------------


def test_jcs_rfc8785_sorting_example() -> None:
    # RFC 8785 §3.2.3: keys sort by UTF-16 code units, so U+1F600 (a surrogate pair starting
    # 0xD83D) comes before U+FB33 although its code point is larger.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert canonical_json(value) == expected


def test_jcs_rfc8785_main_example_strings_and_literals() -> None:
    # RFC 8785 §3.2.2 example, its string and literals parts (numbers: see the float test).
    value = json.loads(
        '{"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        canonical_json(value)
        == (
            '{"literals":[null,true,false],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )


def test_jcs_integers() -> None:
    value = {"n": [0, -1, 1, 10**15, 2**53 - 1, -(2**53 - 1)], "b": True}
    assert canonical_json(value) == (
        b'{"b":true,"n":[0,-1,1,1000000000000000,9007199254740991,-9007199254740991]}'
    )


@pytest.mark.parametrize(
    "value",
    [
        {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001]},
        {"a": [1, {"b": 1.0}]},
        {"x": float("nan")},
        {"x": float("inf")},
        1.5,
    ],
)
def test_jcs_refuses_floats_anywhere(value: Any) -> None:
    with pytest.raises(DefinitionError, match="float"):
        canonical_json(value)


def test_jcs_names_the_path_of_a_float() -> None:
    with pytest.raises(DefinitionError, match=r"\$\.steps\[1\]\.cvss"):
        canonical_json({"steps": [{"cvss": 1}, {"cvss": 9.8}]})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"n": 2**53}, "2\\*\\*53"),
        ({"n": -(2**53)}, "2\\*\\*53"),
        ({1: "int key"}, "not a string"),
        ({"s": {1, 2}}, "not JSON"),
        ({"s": b"bytes"}, "not JSON"),
        ({"s": "\ud800"}, "surrogate|UTF-8"),
    ],
)
def test_jcs_refuses_what_json_cannot_say_exactly(value: Any, match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        canonical_json(value)


def test_jcs_refuses_cycles() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(DefinitionError, match="contains itself"):
        canonical_json(loop)


def test_jcs_accepts_str_enums_and_tuples() -> None:
    from enum import StrEnum

    class Status(StrEnum):
        OK = "succeeded"

    assert canonical_json({"s": Status.OK, "t": (1, "a")}) == b'{"s":"succeeded","t":[1,"a"]}'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_jcs_is_byte_identical_to_the_reference_implementation(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


# --- statements ------------------------------------------------------------------------------


def test_statement_layout(stmt: dict[str, Any]) -> None:
    assert stmt["_type"] == STATEMENT_TYPE
    assert stmt["predicateType"] == PREDICATE_TYPE
    assert stmt["subject"] == [
        {"name": "api", "digest": {"sha256": sha("api")}},
        {"name": "web", "digest": {"sha256": sha("web")}},
    ]


def test_statement_subjects_are_a_set() -> None:
    a, b = ("b", sha("b")), ("a", sha("a"))
    one = statement([a, b, a], PREDICATE_TYPE, {})
    two = statement([b, a], PREDICATE_TYPE, {})
    assert canonical_json(one) == canonical_json(two)
    assert [s["name"] for s in one["subject"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("subjects", "ptype", "match"),
    [
        ([], PREDICATE_TYPE, "at least one subject"),
        ([("api", "sha256:" + sha("x").upper())], PREDICATE_TYPE, "lowercase hex"),
        ([("api", "sha256:abc")], PREDICATE_TYPE, "lowercase hex"),
        ([("api", "sha512:" + sha("x"))], PREDICATE_TYPE, "lowercase hex"),
        ([("", sha("x"))], PREDICATE_TYPE, "name"),
        ([("api", sha("x"))], "not a uri", "not a URI"),
    ],
)
def test_statement_validates_its_input(subjects, ptype: str, match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        statement(subjects, ptype, {})


# --- sign / verify ---------------------------------------------------------------------------


def test_bundle_layout(bundle: dict[str, Any], key: SigningKey, stmt: dict[str, Any]) -> None:
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": key.key_id},
        "tlogEntries": [],
    }
    env = bundle["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert set(env) == {"payload", "payloadType", "signatures"}
    assert [set(s) for s in env["signatures"]] == [{"sig", "keyid"}]
    assert env["signatures"][0]["keyid"] == key.key_id
    # Standard base64 with padding, as protobuf JSON writes bytes.
    assert base64.b64encode(payload_of(bundle)).decode() == env["payload"]
    assert payload_of(bundle) == rfc8785.dumps(stmt)


def test_round_trip(bundle: dict[str, Any], key: SigningKey, stmt: dict[str, Any]) -> None:
    packet = verify_bundle(bundle, [key.public_key()])
    assert isinstance(packet, VerifiedPacket)
    assert packet.statement == stmt
    assert packet.payload == rfc8785.dumps(stmt)
    assert packet.signer_key_id == key.key_id
    assert packet.predicate_type == PREDICATE_TYPE
    assert packet.predicate["note"] == "ünïcödé €"
    assert packet.subject_digests() == ["sha256:" + sha("api"), "sha256:" + sha("web")]
    assert packet.bundle_digest == bundle_digest(bundle)
    assert packet.payload_digest == "sha256:" + hashlib.sha256(packet.payload).hexdigest()


def test_same_statement_same_payload_different_signature(
    stmt: dict[str, Any], key: SigningKey
) -> None:
    one, two = sign_statement(stmt, key), sign_statement(copy.deepcopy(stmt), key)
    assert payload_of(one) == payload_of(two)
    assert sig_of(one) != sig_of(two)  # ECDSA is randomized; determinism is on the payload


def test_bundle_digest_is_over_canonical_json(bundle: dict[str, Any]) -> None:
    assert bundle_bytes(bundle) == rfc8785.dumps(bundle)
    assert bundle_digest(bundle) == "sha256:" + hashlib.sha256(rfc8785.dumps(bundle)).hexdigest()
    # A bundle of another shape takes the generic path, with the same definition.
    extended = copy.deepcopy(bundle)
    extended["verificationMaterial"]["timestampVerificationData"] = {"rfc3161Timestamps": []}
    assert bundle_bytes(extended) == rfc8785.dumps(extended)
    assert bundle_digest(extended) != bundle_digest(bundle)


def test_keys_may_be_a_mapping_whose_labels_are_not_trusted(
    bundle: dict[str, Any], key: SigningKey, other: SigningKey
) -> None:
    packet = verify_bundle(
        bundle, {"mislabelled": key.public_key(), key.key_id: other.public_key()}
    )
    assert packet.signer_key_id == key.key_id


def test_sign_refuses_a_float_in_the_predicate(key: SigningKey) -> None:
    bad = statement([("api", sha("api"))], PREDICATE_TYPE, {"score": 9.8})
    with pytest.raises(DefinitionError, match=r"\$\.predicate\.score"):
        sign_statement(bad, key)


def test_sign_refuses_a_malformed_statement(key: SigningKey, stmt: dict[str, Any]) -> None:
    for broken in (
        {**stmt, "_type": "https://in-toto.io/Statement/v0.1"},
        {**stmt, "subject": []},
        {**stmt, "predicate": "text"},
    ):
        with pytest.raises(DefinitionError, match="cannot sign"):
            sign_statement(broken, key)


# --- tampering -------------------------------------------------------------------------------


def check_of(bundle: Any, keys: Any) -> str:
    with pytest.raises(PacketError) as info:
        verify_bundle(bundle, keys)
    assert isinstance(info.value, IntegrityError)
    return info.value.check


def test_flipped_payload_byte_fails(bundle: dict[str, Any], key: SigningKey) -> None:
    payload = bytearray(payload_of(bundle))
    for index in (0, len(payload) // 2, len(payload) - 1):
        tampered = bytearray(payload)
        tampered[index] ^= 0x01
        assert check_of(reencode(bundle, payload=bytes(tampered)), [key.public_key()]) == (
            "signature"
        )


def test_edited_predicate_fails(bundle: dict[str, Any], key: SigningKey) -> None:
    edited = payload_of(bundle).replace(b'"succeeded"', b'"failed"')
    assert edited != payload_of(bundle)
    assert check_of(reencode(bundle, payload=edited), [key.public_key()]) == "signature"


def test_flipped_signature_byte_fails(bundle: dict[str, Any], key: SigningKey) -> None:
    sig = bytearray(sig_of(bundle))
    for index in (0, 7, len(sig) - 1):
        tampered = bytearray(sig)
        tampered[index] ^= 0x80
        assert check_of(reencode(bundle, sig=bytes(tampered)), [key.public_key()]) == ("signature")


def test_changed_payload_type_fails(bundle: dict[str, Any], key: SigningKey) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["dsseEnvelope"]["payloadType"] = "application/json"
    assert check_of(tampered, [key.public_key()]) == "payload_type"


def test_payload_type_is_bound_by_the_signature(key: SigningKey, stmt: dict[str, Any]) -> None:
    # Signed under another payload type, presented as in-toto: the PAE differs, so it fails.
    forged = signed_raw(canonical_json(stmt), key, payload_type="application/json")
    forged["dsseEnvelope"]["payloadType"] = IN_TOTO_PAYLOAD_TYPE
    assert check_of(forged, [key.public_key()]) == "signature"


def test_hint_naming_another_trusted_key_changes_nothing(
    bundle: dict[str, Any], key: SigningKey, other: SigningKey
) -> None:
    trusted = [other.public_key(), key.public_key()]
    misleading = copy.deepcopy(bundle)
    misleading["verificationMaterial"]["publicKey"]["hint"] = other.key_id
    misleading["dsseEnvelope"]["signatures"][0]["keyid"] = other.key_id
    # The true signer is still found, and named correctly.
    assert verify_bundle(misleading, trusted).signer_key_id == key.key_id
    # With a bad signature, the misleading hint does not help either.
    sig = bytearray(sig_of(misleading))
    sig[10] ^= 0x01
    assert check_of(reencode(misleading, sig=bytes(sig)), trusted) == "signature"
    # And the other key alone never verifies it.
    assert check_of(misleading, [other.public_key()]) == "signature"


def test_unknown_signer(bundle: dict[str, Any], other: SigningKey) -> None:
    with pytest.raises(PacketError, match="unknown signer") as info:
        verify_bundle(bundle, [other.public_key()])
    assert info.value.check == "signer"


def test_no_trusted_keys(bundle: dict[str, Any]) -> None:
    assert check_of(bundle, []) == "signer"


def test_url_safe_base64_is_accepted(key: SigningKey) -> None:
    # Search for a payload and signature whose base64 holds '+' or '/', so the URL-safe form
    # really differs.
    for n in range(200):
        s = statement([("api", sha(f"x{n}"))], PREDICATE_TYPE, {"n": n, "t": "?>?>?~~~"})
        b = sign_statement(s, key)
        env = b["dsseEnvelope"]
        if any(c in env["payload"] + env["signatures"][0]["sig"] for c in "+/"):
            break
    url = copy.deepcopy(b)
    for holder, field in (
        (url["dsseEnvelope"], "payload"),
        (url["dsseEnvelope"]["signatures"][0], "sig"),
    ):
        holder[field] = holder[field].replace("+", "-").replace("/", "_").rstrip("=")
    assert url != b
    assert verify_bundle(url, [key.public_key()]).statement == s


@pytest.mark.parametrize("text", ["YWJj", "YWJj=", "YW-_", "YW+/", "YWI"])
def test_b64decode_accepts_both_alphabets(text: str) -> None:
    assert b64decode(text)


@pytest.mark.parametrize("text", ["YW J", "YW*=", "YWJj====x", "ü"])
def test_b64decode_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        b64decode(text)


def test_wrong_media_type(bundle: dict[str, Any], key: SigningKey) -> None:
    for media_type in (
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/json",
        None,
    ):
        tampered = {**bundle, "mediaType": media_type}
        assert check_of(tampered, [key.public_key()]) == "media_type"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("dsseEnvelope"),
        lambda b: b.pop("verificationMaterial"),
        lambda b: b["verificationMaterial"].pop("publicKey"),
        lambda b: b["verificationMaterial"].update(certificate={"rawBytes": "AAAA"}),
        lambda b: b.update(messageSignature={}),
        lambda b: b["dsseEnvelope"].update(signatures=[]),
        lambda b: b["dsseEnvelope"]["signatures"].append(b["dsseEnvelope"]["signatures"][0]),
        lambda b: b["dsseEnvelope"]["signatures"][0].pop("sig"),
        lambda b: b["dsseEnvelope"].update(payload="not base64 !"),
        lambda b: b["dsseEnvelope"].update(payload=12),
        lambda b: b["dsseEnvelope"]["signatures"][0].update(sig="***"),
    ],
)
def test_malformed_bundles(bundle: dict[str, Any], key: SigningKey, mutate) -> None:
    tampered = copy.deepcopy(bundle)
    mutate(tampered)
    with pytest.raises(PacketError, match="bundle") as info:
        verify_bundle(tampered, [key.public_key()])
    assert info.value.check == "bundle"


def test_unhashable_hint_is_ignored(bundle: dict[str, Any], key: SigningKey) -> None:
    odd = copy.deepcopy(bundle)
    odd["dsseEnvelope"]["signatures"][0]["keyid"] = ["not", "hashable"]
    odd["verificationMaterial"]["publicKey"]["hint"] = 7
    assert verify_bundle(odd, [key.public_key()]).signer_key_id == key.key_id


def test_not_an_object(key: SigningKey) -> None:
    assert check_of(["a", "list"], [key.public_key()]) == "bundle"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"_type": "https://in-toto.io/Statement/v1"}',  # whitespace
        b'{"b":1,"a":2}',  # key order
        b'{"a":1,"a":1}',  # duplicate keys
        b'{"a":1.5}',  # float
        b'{"a":1E2}',  # exponent
        b'{"a":NaN}',
        b'{"a":9007199254740993}',  # beyond 2**53
        b'{"a":-9007199254740992}',  # beyond -(2**53 - 1)
        b'{"a":[0,-2.5]}',  # a float in an array
        b'{"a":[1.0]}',  # a float first in an array
        b'{"a":-0}',  # JCS writes zero as 0
        '{"\uffff":1,"\U0001f600":2}'.encode(),  # code point order, not UTF-16 order
        b'{"a":"\\u0041"}',  # needless escape
        b"\xff\xfe",  # not UTF-8
        b"not json",
    ],
)
def test_payload_must_be_canonical_json(payload: bytes, key: SigningKey) -> None:
    assert check_of(signed_raw(payload, key), [key.public_key()]) == "payload"


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        {"_type": "https://in-toto.io/Statement/v0.1", "subject": [], "predicateType": "x:y"},
        {"_type": STATEMENT_TYPE, "subject": [], "predicateType": "x:y", "predicate": {}},
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "a", "digest": {"sha512": "00"}}],
            "predicateType": "x:y",
            "predicate": {},
        },
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "a", "digest": {"sha256": sha("a")}}],
            "predicateType": "no uri",
            "predicate": {},
        },
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "a", "digest": {"sha256": sha("a")}}],
            "predicateType": "x:y",
        },
    ],
)
def test_statement_shape_is_checked(value: Any, key: SigningKey) -> None:
    assert check_of(signed_raw(canonical_json(value), key), [key.public_key()]) == "statement"


def test_canonical_payloads_that_look_odd_are_accepted(key: SigningKey) -> None:
    # Number-like text inside strings, and JCS's UTF-16 key order beyond U+FFFF.
    value = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "a:1.5,[2e3", "digest": {"sha256": sha("a")}}],
        "predicateType": "x:y",
        "predicate": {"\U0001f600": 2, "\uffff": 1, "n": -9007199254740991, "z": [0, -1]},
    }
    payload = canonical_json(value)
    assert payload.index("\U0001f600".encode()) < payload.index("\uffff".encode())
    verified = verify_bundle(signed_raw(payload, key), [key.public_key()])
    assert verified.statement == value


def test_cosign_style_noncanonical_but_signed_payload_is_refused(
    key: SigningKey, stmt: dict[str, Any]
) -> None:
    # What `cosign attest-blob` would produce: valid signature over pretty-printed JSON.
    pretty = json.dumps(stmt, indent=2).encode()
    with pytest.raises(PacketError, match="not canonical"):
        verify_bundle(signed_raw(pretty, key), [key.public_key()])


# --- the auditor's openssl recipe -------------------------------------------------------------


def openssl_verify(tmp_path: Path, public: PublicKey, signature: bytes, message: bytes):
    (tmp_path / "pub.pem").write_bytes(public.pem())
    (tmp_path / "sig.der").write_bytes(signature)
    (tmp_path / "pae.bin").write_bytes(message)
    return subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "pae.bin"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


@needs_openssl
def test_openssl_verifies_the_rebuilt_pae(
    bundle: dict[str, Any], key: SigningKey, tmp_path: Path
) -> None:
    # As the auditor README says: decode the JSON file, base64-decode payload and sig, rebuild
    # PAE by hand (not with our pae()), run openssl.
    on_disk = json.loads(bundle_bytes(bundle))
    env = on_disk["dsseEnvelope"]
    payload = base64.b64decode(env["payload"])
    kind = env["payloadType"].encode()
    rebuilt = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
    rebuilt += str(len(payload)).encode() + b" " + payload
    result = openssl_verify(
        tmp_path, key.public_key(), base64.b64decode(env["signatures"][0]["sig"]), rebuilt
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Verified OK"


@needs_openssl
def test_openssl_rejects_a_tampered_pae(
    bundle: dict[str, Any], key: SigningKey, tmp_path: Path
) -> None:
    payload = payload_of(bundle).replace(b'"succeeded"', b'"failed"')
    result = openssl_verify(
        tmp_path, key.public_key(), sig_of(bundle), pae(IN_TOTO_PAYLOAD_TYPE, payload)
    )
    assert result.returncode != 0
    assert "Verification failure" in result.stdout + result.stderr


@needs_openssl
def test_openssl_rejects_another_key(
    bundle: dict[str, Any], other: SigningKey, tmp_path: Path
) -> None:
    result = openssl_verify(
        tmp_path, other.public_key(), sig_of(bundle), pae(IN_TOTO_PAYLOAD_TYPE, payload_of(bundle))
    )
    assert result.returncode != 0
