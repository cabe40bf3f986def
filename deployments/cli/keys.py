"""`lorafleet keys create`: a new API key, shown once, and its keys-file entry."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    keys_p = sub.add_parser("keys", help="API keys: `keys create` makes a key and its keys-file entry")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True)
    create_p = keys_sub.add_parser("create", help="print a new random API key once, and the hashed entry for the keys file")
    create_p.add_argument("--tenant", required=True, help="tenant the key acts for (owner of its adapters)")
    create_p.add_argument("--role", choices=("tenant", "admin"), default="tenant")
    create_p.add_argument("--id", help="name of the key in the usage ledger (default: derived from its hash)")
    create_p.set_defaults(func=cmd_keys_create)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from deployments.tenancy.keys import key_entry_yaml, new_key

    key = new_key()
    try:
        entry = key_entry_yaml(key, args.tenant, args.role, args.id)
    except ValueError as err:  # pydantic: a tenant or id that breaks the naming rules
        print(f"lorafleet: {err}", file=sys.stderr)
        return 2
    print(f"API key (shown once, store it now): {key}\n")
    print("Add this entry to the keys file (server.auth.keys_file); it holds only the key's sha256:\n")
    print(entry, end="")
    return 0
