"""The `lorafleet` command line: one module per command group.

    lorafleet serve --config configs/default.yaml [--demo] [--verbose]   (deployments/cli/serve.py)
    lorafleet top [--url URL] [--once]                                   (deployments/cli/top.py)
    lorafleet adapters list|push|pull|show|rm --url URL                  (deployments/cli/adapters.py)
    lorafleet keys create --tenant T --role tenant|admin [--id NAME]     (deployments/cli/keys.py)
    lorafleet demo-assets --out DIR
    lorafleet check-config --config PATH
    lorafleet train CONFIG.yaml | merge A B --out NAME --base BASE | demo-examples --url URL   (factory/cli.py)
    lorafleet sim --workload FILE                                        (cluster/sim/cli.py)
"""

from __future__ import annotations

import argparse
import os
import sys

from deployments.cli.serve import QUIET_ENV
from deployments.config import ConfigError, load_config


def cmd_demo_assets(args: argparse.Namespace) -> int:
    from factory.demo_assets import build_demo_assets

    out = build_demo_assets(args.out)
    print(f"lorafleet: demo assets written to {out}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"lorafleet: {err}", file=sys.stderr)
        return 2
    print(config.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from deployments.cli import adapters, keys, serve, top
    from factory.cli import add_factory_commands

    parser = argparse.ArgumentParser(prog="lorafleet", description="Serve many LoRA adapters of one base model on Ray Serve + vLLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    top.add_parser(sub)

    demo_p = sub.add_parser("demo-assets", help="write the tiny demo base model and adapters")
    demo_p.add_argument("--out", required=True, help="output folder (gets base/ and adapters/)")
    demo_p.set_defaults(func=cmd_demo_assets)

    sub.add_parser("sim", help="simulate routing/placement policies at scale: lorafleet sim --workload FILE (see --help)")
    adapters.add_parser(sub)
    keys.add_parser(sub)

    check_p = sub.add_parser("check-config", help="validate a config file and print it resolved")
    check_p.add_argument("--config", required=True)
    check_p.set_defaults(func=cmd_check_config)

    add_factory_commands(sub)  # train, merge, demo-examples
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sim":  # the simulator owns its own options (pure Python, no Ray)
        from cluster.sim.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
