#!/usr/bin/env python3
"""A Message Batch job's side of Cordon's batch recipe (docs/batch.md), standard library only.

  submit ITEMS.jsonl --url URL --subject S [--tools T] [--config C] [--dry-run --out F]
      Mints one token per item (`cordon token issue --idempotency-scope CUSTOM_ID`), builds one
      batch request per item whose MCP connector entry carries that token, and submits the batch
      (or, with --dry-run, writes the request body to --out: it holds the tokens, keep it private).
  reconcile BATCH_ID | --results RESULTS.jsonl  --items ITEMS.jsonl --resubmit OUT.jsonl [--config C]
      Waits for the batch to end, then reconciles twice: items that failed as messages (errored,
      expired, canceled), and items that succeeded as messages but whose tool calls still have
      errors (`cordon audit errors --scope CUSTOM_ID`). Writes the items to resubmit, one per line,
      and prints a summary as JSON. Resubmitting is `submit OUT.jsonl`: fresh tokens, same scopes.

Each line of ITEMS.jsonl is {"custom_id": "...", "prompt": "..."}. The `cordon` binary is taken
from $CORDON (default: `cordon` on PATH); the API key from $ANTHROPIC_API_KEY.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

API = "https://api.anthropic.com/v1/messages/batches"
API_VERSION = "2023-06-01"
# The MCP connector's beta (docs.anthropic.com, "MCP connector").
MCP_BETA = "mcp-client-2025-04-04"


def cordon(args, config):
    """Runs `cordon ARGS [--config C]` and returns its stdout; exits with its stderr on failure."""
    command = [os.environ.get("CORDON", "cordon"), *args]
    if config:
        command += ["--config", config]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def read_items(path):
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if not isinstance(item.get("custom_id"), str) or not isinstance(item.get("prompt"), str):
                sys.exit(f"{path}:{number}: each item needs a string custom_id and prompt")
            items.append(item)
    ids = [item["custom_id"] for item in items]
    if len(set(ids)) != len(ids):
        sys.exit(f"{path}: custom_ids must be unique (a scope is one item)")
    return items


def mint(item, args):
    """A fresh token for one item, scoped by its custom_id."""
    issue = ["token", "issue", "--subject", args.subject, "--ttl", args.ttl,
             "--idempotency-scope", item["custom_id"]]
    if args.tools:
        issue += ["--tools", args.tools]
    return json.loads(cordon(issue, args.config))["token"]


def batch_request(items, args):
    requests = []
    for item in items:
        requests.append({
            "custom_id": item["custom_id"],
            "params": {
                "model": args.model,
                "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": item["prompt"]}],
                "mcp_servers": [{
                    "type": "url",
                    "url": args.url,
                    "name": args.name,
                    "authorization_token": mint(item, args),
                }],
            },
        })
    return {"requests": requests}


def api(method, url, body=None):
    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        sys.exit("set ANTHROPIC_API_KEY (or use --dry-run / --results)")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "x-api-key": key,
        "anthropic-version": API_VERSION,
        "anthropic-beta": MCP_BETA,
        "content-type": "application/json",
    })
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


def submit(args):
    items = read_items(args.items)
    body = batch_request(items, args)
    if args.dry_run:
        if not args.out:
            sys.exit("--dry-run needs --out FILE (the request holds the tokens)")
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f)
        print(json.dumps({"written": args.out, "items": len(items)}))
        return
    batch = json.loads(api("POST", API, body))
    print(json.dumps({"batch_id": batch["id"], "items": len(items)}))


def results_of(args):
    """The batch's results as parsed JSON lines: from --results, or from the API once it ended."""
    if args.results:
        with open(args.results, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    while True:
        batch = json.loads(api("GET", f"{API}/{args.batch_id}"))
        if batch.get("processing_status") == "ended":
            break
        time.sleep(args.poll_s)
    return [json.loads(line) for line in api("GET", batch["results_url"]).splitlines() if line.strip()]


def reconcile(args):
    if not args.results and not args.batch_id:
        sys.exit("reconcile needs a BATCH_ID or --results FILE")
    items = {item["custom_id"]: item for item in read_items(args.items)}
    message_failed, tool_failed = [], []
    seen = set()
    for line in results_of(args):
        custom_id = line.get("custom_id")
        seen.add(custom_id)
        kind = (line.get("result") or {}).get("type")
        if kind != "succeeded":
            message_failed.append(custom_id)
            continue
        # The message succeeded; a tool call inside it may still have failed.
        report = json.loads(cordon(["audit", "errors", "--scope", custom_id], args.config))
        if report.get("entries"):
            tool_failed.append(custom_id)
    # An item the results do not mention never ran: it is resubmitted too.
    missing = [custom_id for custom_id in items if custom_id not in seen]
    again = [custom_id for custom_id in items if custom_id in set(message_failed + tool_failed + missing)]
    with open(args.resubmit, "w", encoding="utf-8") as f:
        for custom_id in again:
            f.write(json.dumps(items[custom_id]) + "\n")
    print(json.dumps({"message_failed": message_failed, "tool_failed": tool_failed, "missing": missing,
                      "resubmit": len(again), "written": args.resubmit}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("submit", help="mint a token per item and submit the batch")
    s.add_argument("items")
    s.add_argument("--url", required=True, help="Cordon's public MCP URL (https://…/mcp)")
    s.add_argument("--name", default="cordon", help="the connector's server name")
    s.add_argument("--subject", required=True, help="the principal the tokens authenticate as")
    s.add_argument("--tools", help="tool patterns the tokens allow, comma-separated")
    s.add_argument("--ttl", default="30h", help="token lifetime: the batch window and resubmissions")
    s.add_argument("--model", default="claude-sonnet-4-5")
    s.add_argument("--max-tokens", type=int, default=1024)
    s.add_argument("--config", help="the server's cordon.toml (its data directory holds the signing key)")
    s.add_argument("--dry-run", action="store_true", help="write the request to --out instead of sending it")
    s.add_argument("--out")
    s.set_defaults(run=submit)

    r = commands.add_parser("reconcile", help="list the items to resubmit")
    r.add_argument("batch_id", nargs="?")
    r.add_argument("--results", help="a results file (JSON lines) instead of asking the API")
    r.add_argument("--items", required=True)
    r.add_argument("--resubmit", required=True, help="where to write the items to resubmit")
    r.add_argument("--config")
    r.add_argument("--poll-s", type=float, default=30)
    r.set_defaults(run=reconcile)

    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
