"""A loopback WS-Management stand-in for a Windows host: THE ONE TEST DOUBLE of the suite.

No WinRM server runs on Linux and no package provides one (DESIGN.md §8, reference/platform.md
§7), so WinRM tests talk to this instead. It is strict about what pywinrm sends, so the tests
prove our requests are what a real endpoint expects, and it says so when they are not:

- HTTPS with a certificate from its own throwaway CA (`ca_pem`, `ca_file`), or plain http when
  asked (to show what the client refuses to send over it);
- POST to `/wsman` only, `Content-Type: application/soap+xml;charset=UTF-8`, and HTTP Basic
  with the one user and password it was given (else 401 with `WWW-Authenticate: Basic`);
- a SOAP 1.2 envelope with WS-Addressing `To`, `ReplyTo/Address`, `MessageID` (`uuid:…`) and
  `Action`, WS-Management `ResourceURI` (the cmd shell), `MaxEnvelopeSize` and
  `OperationTimeout` (`PTnS`); `mustUnderstand="true"` on ResourceURI and Action (pywinrm
  writes it unqualified; a qualified one is accepted too);
- the shell protocol in order: Create (shell streams), Command (for a known shell), Receive
  (for a known command), Signal (terminate), Delete; answers carry `RelatesTo`.

What it cannot prove: NTLM, Kerberos or CredSSP, a real listener's certificate handling, real
Windows output encodings, or what PowerShell would do. For `powershell -EncodedCommand` it
decodes the script and records it (`scripts`), so tests assert the exact PowerShell that
arrived; the output of each command comes from `answer(script)`, which tests set (canned
output: exit code, stdout, stderr, or `HANG` for a command that never finishes).
Every envelope problem is recorded in `errors` (tests assert it stays empty) and answered with
a SOAP fault.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SOAP = "http://www.w3.org/2003/05/soap-envelope"
ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    f"{SHELL}/Command": "Command",
    f"{SHELL}/Receive": "Receive",
    f"{SHELL}/Signal": "Signal",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
}
TERMINATE = f"{SHELL}/signal/terminate"
HANG = object()  # an answer: the command never finishes (Receive keeps saying Running)


@dataclass(frozen=True)
class Answer:
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


AnswerFn = Callable[[str], "Answer | object"]


# -- certificates -------------------------------------------------------------------------------
def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(
    common: str = "stella winrm test CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- the stand-in -------------------------------------------------------------------------------
class WinrmStandin:
    def __init__(
        self,
        directory: Path,
        *,
        username: str,
        password: str,
        tls: bool = True,
        answer: AnswerFn | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.answer: AnswerFn = answer or (lambda script: Answer())
        self.scripts: list[str] = []
        self.actions: list[str] = []
        self.errors: list[str] = []
        self.requests = 0
        self.shells: dict[str, dict[str, object]] = {}
        self.lock = threading.Lock()
        ca_key, ca = make_ca()
        self.ca_pem = _pem(ca)
        self.ca_file = directory / "winrm-ca.pem"
        self.ca_file.write_text(self.ca_pem)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.standin = self  # type: ignore[attr-defined]
        self.tls = tls
        if tls:
            key, cert = make_server_cert(ca_key, ca)
            cert_file = directory / "winrm-server.pem"
            key_file = directory / "winrm-server.key"
            cert_file.write_text(_pem(cert))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/wsman"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # -- validation and answers ------------------------------------------------------------
    def handle(self, body: bytes) -> tuple[int, bytes]:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return self.fault(f"envelope is not XML: {exc}")
        if root.tag != f"{{{SOAP}}}Envelope":
            return self.fault(f"root is {root.tag}, not a SOAP 1.2 Envelope")
        header = root.find(f"{{{SOAP}}}Header")
        body_node = root.find(f"{{{SOAP}}}Body")
        if header is None or body_node is None:
            return self.fault("envelope lacks a Header or a Body")
        problems = []
        to = header.findtext(f"{{{ADDRESSING}}}To")
        if not to:
            problems.append("no a:To")
        reply = header.find(f"{{{ADDRESSING}}}ReplyTo/{{{ADDRESSING}}}Address")
        if reply is None or not (reply.text or "").endswith("/role/anonymous"):
            problems.append("ReplyTo/Address is not the anonymous role")
        message_id = header.findtext(f"{{{ADDRESSING}}}MessageID") or ""
        if not re.fullmatch(r"uuid:[0-9a-fA-F-]{36}", message_id):
            problems.append(f"MessageID {message_id!r} is not uuid:…")
        action_node = header.find(f"{{{ADDRESSING}}}Action")
        resource = header.find(f"{{{WSMAN}}}ResourceURI")
        for label, node in (("Action", action_node), ("ResourceURI", resource)):
            if node is None:
                problems.append(f"no {label}")
            elif not _must_understand(node):
                problems.append(f"{label} lacks mustUnderstand=true")
        if resource is not None and resource.text != CMD_URI:
            problems.append(f"ResourceURI {resource.text!r} is not the cmd shell")
        size = header.find(f"{{{WSMAN}}}MaxEnvelopeSize")
        if size is None or not (size.text or "").isdigit():
            problems.append("MaxEnvelopeSize missing or not a number")
        timeout = header.findtext(f"{{{WSMAN}}}OperationTimeout") or ""
        if not re.fullmatch(r"PT\d+(\.\d+)?S", timeout):
            problems.append(f"OperationTimeout {timeout!r} is not PTnS")
        action = ACTIONS.get(action_node.text or "") if action_node is not None else None
        if action is None:
            problems.append("Action is not one of Create, Command, Receive, Signal, Delete")
        if problems:
            return self.fault("; ".join(problems))
        with self.lock:
            self.actions.append(str(action))
        shell_id = None
        if action != "Create":
            selector = header.find(f"{{{WSMAN}}}SelectorSet/{{{WSMAN}}}Selector")
            if selector is None or selector.get("Name") != "ShellId":
                return self.fault(f"{action} names no ShellId selector")
            shell_id = selector.text or ""
            if shell_id not in self.shells:
                return self.fault(f"{action} names an unknown shell {shell_id!r}")
        handler = getattr(self, f"on_{str(action).lower()}")
        return handler(body_node, shell_id, message_id)  # type: ignore[no-any-return]

    def on_create(self, body: ET.Element, _: None, message_id: str) -> tuple[int, bytes]:
        shell = body.find(f"{{{SHELL}}}Shell")
        if shell is None:
            return self.fault("Create has no rsp:Shell")
        if (shell.findtext(f"{{{SHELL}}}OutputStreams") or "").split() != ["stdout", "stderr"]:
            return self.fault("Create does not ask for stdout and stderr")
        shell_id = str(uuid.uuid4()).upper()
        with self.lock:
            self.shells[shell_id] = {}
        return 200, _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
            message_id,
            "<x:ResourceCreated><a:Address>https://127.0.0.1/wsman</a:Address>"
            "<a:ReferenceParameters><w:ResourceURI>" + CMD_URI + "</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
            "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId></rsp:Shell>",
        )

    def on_command(self, body: ET.Element, shell_id: str, message_id: str) -> tuple[int, bytes]:
        line = body.find(f"{{{SHELL}}}CommandLine")
        if line is None or not line.findtext(f"{{{SHELL}}}Command"):
            return self.fault("Command has no rsp:CommandLine/rsp:Command")
        program = line.findtext(f"{{{SHELL}}}Command") or ""
        arguments = (line.findtext(f"{{{SHELL}}}Arguments") or "").split()
        script = None
        if program.lower() in ("powershell", "powershell.exe"):
            lowered = [a.lower() for a in arguments]
            if "-encodedcommand" not in lowered or lowered.index("-encodedcommand") + 1 >= len(
                arguments
            ):
                return self.fault("powershell without -EncodedCommand SCRIPT")
            encoded = arguments[lowered.index("-encodedcommand") + 1]
            try:
                script = base64.b64decode(encoded, validate=True).decode("utf-16-le")
            except ValueError:
                return self.fault("-EncodedCommand is not base64 of UTF-16LE text")
        text = script if script is not None else " ".join([program, *arguments])
        with self.lock:
            self.scripts.append(text)
        answer = self.answer(text)
        command_id = str(uuid.uuid4()).upper()
        with self.lock:
            self.shells[shell_id][command_id] = answer
        return 200, _envelope(
            f"{SHELL}/CommandResponse",
            message_id,
            f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId>"
            "</rsp:CommandResponse>",
        )

    def on_receive(self, body: ET.Element, shell_id: str, message_id: str) -> tuple[int, bytes]:
        desired = body.find(f"{{{SHELL}}}Receive/{{{SHELL}}}DesiredStream")
        command_id = desired.get("CommandId") if desired is not None else None
        if desired is None or command_id not in self.shells[shell_id]:
            return self.fault("Receive names no command of this shell")
        answer = self.shells[shell_id][command_id]
        if answer is HANG:
            threading.Event().wait(0.2)
            return 200, _envelope(
                f"{SHELL}/ReceiveResponse",
                message_id,
                f'<rsp:ReceiveResponse><rsp:CommandState CommandId="{command_id}" '
                f'State="{SHELL}/CommandState/Running"/></rsp:ReceiveResponse>',
            )
        assert isinstance(answer, Answer)
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{command_id}">'
            f"{base64.b64encode(data).decode()}</rsp:Stream>"
            for name, data in (("stdout", answer.stdout), ("stderr", answer.stderr))
            if data
        )
        return 200, _envelope(
            f"{SHELL}/ReceiveResponse",
            message_id,
            f"<rsp:ReceiveResponse>{streams}"
            f'<rsp:Stream Name="stdout" CommandId="{command_id}" End="true"></rsp:Stream>'
            f'<rsp:Stream Name="stderr" CommandId="{command_id}" End="true"></rsp:Stream>'
            f'<rsp:CommandState CommandId="{command_id}" State="{SHELL}/CommandState/Done">'
            f"<rsp:ExitCode>{answer.exit_code}</rsp:ExitCode></rsp:CommandState>"
            "</rsp:ReceiveResponse>",
        )

    def on_signal(self, body: ET.Element, shell_id: str, message_id: str) -> tuple[int, bytes]:
        signal = body.find(f"{{{SHELL}}}Signal")
        if signal is None or signal.get("CommandId") not in self.shells[shell_id]:
            return self.fault("Signal names no command of this shell")
        if signal.findtext(f"{{{SHELL}}}Code") != TERMINATE:
            return self.fault("Signal is not terminate")
        return 200, _envelope(f"{SHELL}/SignalResponse", message_id, "<rsp:SignalResponse/>")

    def on_delete(self, body: ET.Element, shell_id: str, message_id: str) -> tuple[int, bytes]:
        with self.lock:
            self.shells.pop(shell_id, None)
        return 200, _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", message_id, ""
        )

    def fault(self, problem: str) -> tuple[int, bytes]:
        with self.lock:
            self.errors.append(problem)
        text = problem.replace("&", "&amp;").replace("<", "&lt;")
        return 500, (
            f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault><s:Code><s:Value>s:Sender'
            f'</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">{text}</s:Text>'
            "</s:Reason></s:Fault></s:Body></s:Envelope>"
        ).encode()


def _must_understand(node: ET.Element) -> bool:
    value = node.get("mustUnderstand") or node.get(f"{{{SOAP}}}mustUnderstand")
    return value in ("true", "1")


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{ADDRESSING}" xmlns:w="{WSMAN}" '
        f'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:rsp="{SHELL}">'
        f"<s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        standin: WinrmStandin = self.server.standin  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with standin.lock:
            standin.requests += 1
        if self.path != "/wsman":
            standin.errors.append(f"POST to {self.path}, not /wsman")
            self._send(404, b"")
            return
        expected = base64.b64encode(f"{standin.username}:{standin.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        content_type = (self.headers.get("Content-Type") or "").replace(" ", "").lower()
        if content_type != "application/soap+xml;charset=utf-8":
            status, answer = standin.fault(f"Content-Type is {content_type!r}")
        else:
            status, answer = standin.handle(body)
        self._send(status, answer)

    def do_GET(self) -> None:
        self._send(405, b"")
