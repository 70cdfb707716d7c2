"""The official Python MCP client (PyPI `mcp`) against the real `cordon` binary.

Proves interoperability beyond our own rmcp-based tests: over Streamable HTTP (session mode and
stateless mode), over HTTPS with a self-signed certificate, over the legacy HTTP+SSE transport,
and over stdio, list the demo tools,
call demo_echo and demo_add, and see a typed error. Run by `make test` as
`python official_client.py CORDON_BIN PLUGINS_DIR`.
"""

import asyncio
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

CORDON, PLUGINS = sys.argv[1], sys.argv[2]
DATA = tempfile.mkdtemp(prefix="cordon-py-")
results = {"passed": 0, "failed": 0}


async def exercise(session: ClientSession) -> None:
    await session.initialize()
    names = {t.name for t in (await session.list_tools()).tools}
    assert {"demo_echo", "demo_add", "demo_greet"} <= names, names

    echo = await session.call_tool("demo_echo", {"text": "héllo"})
    assert not echo.is_error and echo.structured_content == {"text": "héllo"}, echo

    add = await session.call_tool("demo_add", {"a": 2, "b": 40})
    assert not add.is_error and add.structured_content == {"sum": 42}, add

    bad = await session.call_tool("demo_add", {"a": "two"})
    assert bad.is_error, bad
    error = json.loads(bad.content[0].text)["error"]
    assert error["type"] == "invalid_arguments" and not error["retryable"], error
    assert {v["pointer"] for v in error["violations"]} == {"/a", ""}, error


def start_http(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [CORDON, "serve", "--plugins", PLUGINS, "--data", DATA, "--listen", "127.0.0.1:0",
         "--allow-unauthenticated", *extra],
        stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stderr:
        match = re.search(r"url=(https?://\S+)", line)
        if match:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError("cordon exited before listening")


class Warnings(logging.Handler):
    """Collects the client's own warnings ("Session termination failed: 202" was one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def over_http(*extra: str) -> None:
    proc, url = start_http(*extra)
    warnings = Warnings()
    logging.getLogger("mcp").addHandler(warnings)
    try:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session)
    finally:
        logging.getLogger("mcp").removeHandler(warnings)
        proc.terminate()
        proc.wait(timeout=10)
    # Closing the client ends the session (DELETE): it must see a clean close.
    assert not warnings.messages, warnings.messages


def self_signed_certificate() -> tuple[str, str]:
    """A fresh self-signed certificate for localhost and 127.0.0.1: (cert.pem, key.pem) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        # Self-signed and trusted directly: it is its own authority.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tempfile.mkdtemp(prefix="cordon-py-tls-")
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


async def over_https() -> None:
    cert, key = self_signed_certificate()
    proc, url = start_http("--tls-cert", cert, "--tls-key", key)
    try:
        assert url.startswith("https://"), url
        # Trust this certificate only, as a client of a private deployment would.
        trust = ssl.create_default_context(cafile=cert)
        timeout = httpx2.Timeout(30, read=300)
        async with httpx2.AsyncClient(verify=trust, timeout=timeout) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await exercise(session)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def over_legacy_sse() -> None:
    """The 2024-11-05 HTTP+SSE transport (`GET /sse`, `POST /messages`), as older clients use it,
    behind a bearer token like every HTTP route."""
    token = "legacy-sse-token-" + os.urandom(8).hex()
    digest = hashlib.sha256(token.encode()).hexdigest()
    config = os.path.join(tempfile.mkdtemp(prefix="cordon-py-sse-"), "cordon.toml")
    with open(config, "w") as f:
        f.write(f'[[auth.tokens]]\nprincipal = "legacy"\nsha256 = "{digest}"\n')
    proc = subprocess.Popen(
        [CORDON, "serve", "--plugins", PLUGINS, "--data", DATA, "--listen", "127.0.0.1:0", "--config", config],
        stderr=subprocess.PIPE, text=True,
    )
    url = None
    for line in proc.stderr:
        match = re.search(r"url=(https?://\S+)/mcp", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            url = match.group(1)
            break
    try:
        assert url, "cordon exited before listening"
        # Without the token the stream is refused, as /mcp is.
        async with httpx2.AsyncClient() as http:
            refused = await http.get(f"{url}/sse")
            assert refused.status_code == 401, refused.status_code
        async with sse_client(f"{url}/sse", headers={"Authorization": f"Bearer {token}"}) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def over_stdio() -> None:
    params = StdioServerParameters(
        command=CORDON, args=["serve", "--stdio", "--plugins", PLUGINS, "--data", DATA],
        env={"CORDON_LOG": "warn"},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session)


async def main() -> None:
    for name, case in [
        ("http session", over_http()),
        ("http stateless", over_http("--stateless")),
        ("https (self-signed certificate)", over_https()),
        ("the legacy HTTP+SSE transport", over_legacy_sse()),
        ("stdio", over_stdio()),
    ]:
        try:
            await case
            results["passed"] += 1
            print(f"ok   official python client over {name}")
        except Exception as e:  # report every case, then fail at the end
            results["failed"] += 1
            print(f"FAIL official python client over {name}: {e!r}")


asyncio.run(main())
print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
