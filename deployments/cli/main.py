"""The `lorafleet` command line.

    lorafleet serve --config configs/default.yaml [--host H] [--port P] [--metrics-port M]
    lorafleet demo-assets --out DIR
    lorafleet check-config --config PATH
    lorafleet adapters list|push|pull|show|rm --url URL   (deployments/cli/adapters.py)
    lorafleet train CONFIG.yaml | merge A B --out NAME --base BASE | demo-examples --url URL   (factory/cli.py)
    lorafleet keys create --tenant T --role tenant|admin [--id NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from deployments.config import ConfigError, LorafleetConfig, load_config

# Quiet, offline-friendly defaults for everything this process (and Ray workers it
# starts) imports; set before transformers/vLLM are imported.
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_until_answering(url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def ready_message(config: LorafleetConfig, adapter: str | None, metrics_url: str | None = None) -> str:
    url = f"http://{config.server.host}:{config.server.port}"
    model = adapter or config.served_names[0]
    metrics_line = f"\n  Prometheus metrics (lorafleet's, Ray's, Ray Serve's): {metrics_url}\n" if metrics_url else ""
    return f"""
lorafleet is serving {', '.join(config.served_names)} on {url}  (Ctrl-C to stop)
{metrics_line}
  curl {url}/v1/models
  curl {url}/v1/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "prompt": "Hello", "max_tokens": 16}}'

  python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="unused")
print(client.chat.completions.create(model="{model}", max_tokens=16,
      messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
EOF
"""


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config).with_overrides(host=args.host, port=args.port, metrics_port=args.metrics_port)
    except ConfigError as err:
        print(f"lorafleet: {err}", file=sys.stderr)
        return 2
    for m in config.models:
        if Path(m.source).is_absolute() and not Path(m.source).exists():
            print(f"lorafleet: base model folder {m.source} does not exist (run `lorafleet demo-assets`?)", file=sys.stderr)
            return 2
    if not _port_free(config.server.host, config.server.port):
        print(f"lorafleet: {config.server.host}:{config.server.port} is already in use; pick another with --port", file=sys.stderr)
        return 2
    # A local cluster opens Ray's metrics endpoint at server.metrics_port (on all
    # interfaces unless the node's address is loopback: Ray's choice); a joined cluster
    # keeps the port its nodes were started with.
    joining = bool(os.environ.get("RAY_ADDRESS"))
    usage = config.server.usage
    if usage.enabled and usage.backend == "postgres" and not joining and not os.environ.get(usage.postgres_dsn_env, "").strip():
        # A local cluster's workers inherit this environment: without the DSN no ingress could start.
        print(f"lorafleet: server.usage.backend is postgres but the environment variable {usage.postgres_dsn_env} "
              "(server.usage.postgres_dsn_env) is not set; export it with the database's DSN", file=sys.stderr)
        return 2
    metrics_port = None if joining else config.server.metrics_port
    if metrics_port is not None and not _port_free("0.0.0.0", metrics_port):
        print(f"lorafleet: metrics port {metrics_port} is already in use; pick another with --metrics-port", file=sys.stderr)
        return 2

    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app

    # No RAY_ADDRESS: a new local cluster ("local"), never whatever cluster happens to run on this machine.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": _QUIET_ENV},
             **({"_metrics_export_port": metrics_port} if metrics_port is not None else {}))
    # After ray.init: Ray installs its own fatal-signal handlers, ours must win so
    # SIGTERM (Kubernetes, CI, Ctrl-C) takes the clean shutdown path below.
    stop = threading.Event()
    ready = threading.Event()

    def on_signal(*_):
        # Before the app is up, interrupt the start-up wait at once; after, let the
        # main loop leave normally. Either way the `finally` below cleans up.
        stop.set()
        if not ready.is_set():
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        serve.start(http_options={"host": config.server.host, "port": config.server.port,
                                  "request_timeout_s": config.server.request_timeout_s})
        print(f"lorafleet: starting {config.deployment.num_replicas} engine replica(s)...", flush=True)
        serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
        base_url = f"http://{config.server.host}:{config.server.port}"
        if not _wait_until_answering(f"{base_url}/health", timeout_s=120):
            print("lorafleet: the server did not become healthy in time", file=sys.stderr)
            return 1
        adapters = _first_adapter(base_url)
        ready.set()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port is not None else None
        print(ready_message(config, adapters, metrics_url), flush=True)
        if getattr(args, "demo_examples", False):
            _print_demo_examples(base_url, config.served_names[0], config.served_names)
        while not stop.wait(1.0):
            pass
        print("lorafleet: shutting down...", flush=True)
        return 0
    except KeyboardInterrupt:
        print("lorafleet: interrupted during start-up, shutting down...", flush=True)
        return 130
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _first_adapter(base_url: str) -> str | None:
    import httpx

    response = httpx.get(f"{base_url}/v1/models", timeout=10)
    if response.status_code != 200:  # 401 with auth on: the banner names the base model
        return None
    models = response.json()["data"]
    adapters = [m["id"] for m in models if m.get("parent")]
    return adapters[0] if adapters else None


def _print_demo_examples(base_url: str, base_model: str, served: tuple[str, ...] = ()) -> None:
    from factory.demo_assets import DEMO_ADAPTERS, SECOND_ADAPTERS, SECOND_BASE_NAME
    from factory.demo_examples import showcase

    try:
        lines = showcase(base_url, DEMO_ADAPTERS, base_model)
        if SECOND_BASE_NAME in served:  # the two-base demo: the second base's skills, next to that base's answer
            lines += showcase(base_url, SECOND_ADAPTERS, SECOND_BASE_NAME)
    except Exception as err:  # noqa: BLE001 - a showcase failure must not stop the server
        print(f"lorafleet: could not run the demo examples: {err}", file=sys.stderr)
        return
    print("  demo skills (greedy; `lorafleet demo-examples --url " + base_url + "` shows them again):")
    print("\n".join(lines) + "\n", flush=True)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorafleet", description="Serve many LoRA adapters of one base model on Ray Serve + vLLM.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="start (or join RAY_ADDRESS) a Ray cluster and serve the OpenAI API")
    serve_p.add_argument("--config", required=True, help="YAML config (see configs/default.yaml)")
    serve_p.add_argument("--host", help="override server.host")
    serve_p.add_argument("--port", type=int, help="override server.port")
    serve_p.add_argument("--metrics-port", type=int, help="override server.metrics_port (Ray's Prometheus endpoint)")
    serve_p.add_argument("--demo-examples", action="store_true", help="once ready, print one request per demo skill adapter")
    serve_p.set_defaults(func=cmd_serve)

    demo_p = sub.add_parser("demo-assets", help="write the tiny demo base model and adapters")
    demo_p.add_argument("--out", required=True, help="output folder (gets base/ and adapters/)")
    demo_p.set_defaults(func=cmd_demo_assets)

    sub.add_parser("sim", help="simulate routing/placement policies at scale: lorafleet sim --workload FILE (see --help)")

    from deployments.cli.adapters import add_parser as add_adapters_parser

    add_adapters_parser(sub)

    keys_p = sub.add_parser("keys", help="API keys: `keys create` makes a key and its keys-file entry")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True)
    create_p = keys_sub.add_parser("create", help="print a new random API key once, and the hashed entry for the keys file")
    create_p.add_argument("--tenant", required=True, help="tenant the key acts for (owner of its adapters)")
    create_p.add_argument("--role", choices=("tenant", "admin"), default="tenant")
    create_p.add_argument("--id", help="name of the key in the usage ledger (default: derived from its hash)")
    create_p.set_defaults(func=cmd_keys_create)

    check_p = sub.add_parser("check-config", help="validate a config file and print it resolved")
    check_p.add_argument("--config", required=True)
    check_p.set_defaults(func=cmd_check_config)

    from factory.cli import add_factory_commands

    add_factory_commands(sub)  # train, merge, demo-examples
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sim":  # the simulator owns its own options (pure Python, no Ray)
        from cluster.sim.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
