"""`lorafleet adapters list|push|pull|show|rm`: the registry API from a terminal.

    lorafleet adapters list [--url URL]
    lorafleet adapters push PEFT_DIR --name NAME [--version N] [--visibility public|private] [--owner O]
    lorafleet adapters pull NAME[@VERSION] --out DIR
    lorafleet adapters show NAME[@VERSION]
    lorafleet adapters rm NAME[@VERSION]

A thin httpx client of `/v1/adapters` (deployments/api/registry.py): every check happens
on the server, and its error message is printed as is. Exit codes: 0 done, 1 the server
refused (or could not be reached), 2 a local problem (missing folder, bad --out).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


PUSH_ATTEMPTS = 10


def add_parser(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("LORAFLEET_URL", DEFAULT_URL),
                        help=f"the fleet's base URL (default $LORAFLEET_URL or {DEFAULT_URL})")
    common.add_argument("--api-key", default=os.environ.get("LORAFLEET_API_KEY"),
                        help="sent as a Bearer token when the fleet requires one (default $LORAFLEET_API_KEY)")
    common.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser = sub.add_parser("adapters", help="list, push, pull, show or remove adapters of a running fleet")
    actions = parser.add_subparsers(dest="action", required=True)

    actions.add_parser("list", parents=[common], help="every adapter: latest version, versions, servable")

    push = actions.add_parser("push", parents=[common], help="upload a local peft folder as a new version")
    push.add_argument("folder", help="peft adapter folder (adapter_config.json + adapter_model.safetensors)")
    push.add_argument("--name", required=True, help="adapter name (the `model` clients will use)")
    push.add_argument("--version", help="explicit version number (default: the next one)")
    push.add_argument("--visibility", choices=("public", "private"), default="public")
    push.add_argument("--owner", help="owner recorded in the manifest")

    pull = actions.add_parser("pull", parents=[common], help="download a version's files into a folder")
    pull.add_argument("model", help="NAME (latest) or NAME@VERSION")
    pull.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")

    show = actions.add_parser("show", parents=[common], help="print a version's manifest")
    show.add_argument("model", help="NAME (latest) or NAME@VERSION")

    rm = actions.add_parser("rm", parents=[common], help="delete NAME@VERSION, or every version of NAME")
    rm.add_argument("model", help="NAME (all versions) or NAME@VERSION")
    parser.set_defaults(func=run)


def _client(args):
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=args.timeout)


def _check(response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    raise CliError(f"{response.status_code}: {message}", 1)


def _list(client, args) -> None:
    response = client.get("/v1/adapters")
    _check(response)
    rows = response.json()["data"]
    if not rows:
        print("no adapters")
        return
    print(f"{'NAME':<32} {'LATEST':>6}  {'VERSIONS':<16} {'RANK':>4}  {'VISIBILITY':<10} STATUS")
    for a in rows:
        versions = ",".join(a["versions"])
        status = "servable" if a["servable"] else f"refused: {a['error']}"
        print(f"{a['id']:<32} {a['latest']:>6}  {versions:<16} {a['rank'] or '-':>4}  {a['visibility']:<10} {status}")


def _push(client, args) -> None:
    from adapters.archive import pack_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder", 2)
    archive = pack_folder(folder)
    data = {"name": args.name, "visibility": args.visibility}
    if args.version:
        data["version"] = args.version
    if args.owner:
        data["owner"] = args.owner
    for _ in range(PUSH_ATTEMPTS):  # the server processes a few uploads at once: 503 means wait and retry
        response = client.post("/v1/adapters", data=data, files={"file": (f"{args.name}.tar.gz", archive, "application/gzip")})
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    _check(response)
    body = response.json()
    print(f"published {body['id']} ({len(body['files'])} files, {body['size']} bytes, sha256 {body['fingerprint'][:12]})")


def _pull(client, args) -> None:
    from adapters.archive import ArchiveLimits, extract_adapter_archive

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{out} exists and is not an empty folder", 2)
    response = client.get(f"/v1/adapters/{args.model}/archive")
    _check(response)
    out.mkdir(parents=True, exist_ok=True)
    # The archive is checked like an upload: a hostile server cannot write outside `out`.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        root = extract_adapter_archive(io.BytesIO(response.content), Path(tmp), ArchiveLimits(1 << 34, 10_000))
        for path in root.iterdir():
            path.rename(out / path.name)
    print(f"pulled {args.model} into {out}")


def _show(client, args) -> None:
    response = client.get(f"/v1/adapters/{args.model}")
    _check(response)
    print(json.dumps(response.json(), indent=2))


def _rm(client, args) -> None:
    response = client.delete(f"/v1/adapters/{args.model}")
    _check(response)
    print(f"deleted {', '.join(response.json()['deleted'])}")


ACTIONS = {"list": _list, "push": _push, "pull": _pull, "show": _show, "rm": _rm}


def run(args: argparse.Namespace) -> int:
    import httpx

    from adapters.errors import LorafleetError

    try:
        with _client(args) as client:
            ACTIONS[args.action](client, args)
    except CliError as err:
        print(f"lorafleet adapters {args.action}: {err}", file=sys.stderr)
        return err.code
    except httpx.HTTPError as err:
        print(f"lorafleet adapters {args.action}: cannot reach {args.url}: {err}", file=sys.stderr)
        return 1
    except LorafleetError as err:  # a pulled archive that fails the safety checks
        print(f"lorafleet adapters {args.action}: {err.message}", file=sys.stderr)
        return 1
    return 0
