"""The official Python MCP client (PyPI `mcp`) against the real `cordon` binary.

Proves interoperability beyond our own rmcp-based tests: over Streamable HTTP (session mode and
stateless mode) and over stdio, list the demo tools, call demo_echo and demo_add, and see a
typed error. Run by `make test` as `python official_client.py CORDON_BIN PLUGINS_DIR`.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading

from mcp import ClientSession, StdioServerParameters
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
        match = re.search(r"url=(http://\S+)", line)
        if match:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError("cordon exited before listening")


async def over_http(*extra: str) -> None:
    proc, url = start_http(*extra)
    try:
        async with streamable_http_client(url) as (read, write):
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
