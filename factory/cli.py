"""`lorafleet train`, `lorafleet merge` and `lorafleet demo-examples` (registered by deployments/cli/main.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from factory.errors import FactoryError


def cmd_train(args: argparse.Namespace) -> int:
    from factory.config import load_train_config
    from factory.train import MANIFEST, train

    try:
        config = load_train_config(args.config)
        folder = train(config, progress=not args.quiet)
    except FactoryError as err:
        print(f"lorafleet: {err.message}", file=sys.stderr)
        return 2
    metrics = json.loads((folder / MANIFEST).read_text())["metrics"]
    eval_loss = "n/a" if metrics["eval_loss"] is None else f"{metrics['eval_loss']:.4f}"
    print(f"lorafleet: adapter written to {folder} (train loss {metrics['train_loss']:.4f}, eval loss {eval_loss})")
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_merge(args: argparse.Namespace) -> int:
    from factory.merge import merge_adapters

    store = Path(args.store) if args.store else None
    inputs = [store / a if store else Path(a) for a in args.adapters]
    out_dir = Path(args.out_dir) if args.out_dir else (store or inputs[0].parent)
    try:
        folder = merge_adapters(inputs, base=args.base, out_dir=out_dir, name=args.out, method=args.method,
                                weights=args.weights, density=args.density, max_lora_rank=args.max_lora_rank,
                                seed=args.seed)
    except FactoryError as err:
        print(f"lorafleet: {err.message}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - e.g. AdapterInvalid for the output name
        message = getattr(err, "message", str(err))
        print(f"lorafleet: {message}", file=sys.stderr)
        return 2
    print(f"lorafleet: merged adapter written to {folder}")
    return 0


def cmd_demo_examples(args: argparse.Namespace) -> int:
    from factory.demo_assets import BASE_NAME, DEMO_ADAPTERS
    from factory.demo_examples import score_matrix, showcase

    print("demo skills (greedy, completions endpoint):")
    for line in showcase(args.url, DEMO_ADAPTERS, args.base_model or BASE_NAME):
        print(line)
    if args.score:
        matrix = score_matrix(args.url, DEMO_ADAPTERS, args.base_model or BASE_NAME, args.score)
        print(json.dumps(matrix, indent=2))
    return 0


def add_factory_commands(sub) -> None:
    train_p = sub.add_parser("train", help="train a LoRA adapter from a JSONL dataset (see configs/train-example.yaml)")
    train_p.add_argument("config", help="training config YAML")
    train_p.add_argument("--quiet", action="store_true", help="no progress bar")
    train_p.set_defaults(func=cmd_train)

    merge_p = sub.add_parser("merge", help="merge adapters with peft's add_weighted_adapter")
    merge_p.add_argument("adapters", nargs="+", help="adapter folders (or names in --store)")
    merge_p.add_argument("--out", required=True, help="name of the merged adapter")
    merge_p.add_argument("--base", required=True, help="base model folder or hub id the adapters were trained on")
    merge_p.add_argument("--method", default="linear", choices=("linear", "ties", "dare_linear"))
    merge_p.add_argument("--weights", type=_floats, help="comma-separated weight per adapter (default 1.0 each)")
    merge_p.add_argument("--density", type=float, default=0.5, help="share of weights kept by ties / dare_linear")
    merge_p.add_argument("--store", help="local adapter store folder: adapters are names in it, the result goes there")
    merge_p.add_argument("--out-dir", help="folder for the result (default: --store, else the first adapter's folder)")
    merge_p.add_argument("--max-lora-rank", type=int, default=16, help="the fleet's engine.max_lora_rank")
    merge_p.add_argument("--seed", type=int, default=0, help="seed for dare_linear's random drop")
    merge_p.set_defaults(func=cmd_merge)

    ex_p = sub.add_parser("demo-examples", help="show each demo adapter's skill on a running server")
    ex_p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    ex_p.add_argument("--base-model", help="served name of the base model (default: the demo base)")
    ex_p.add_argument("--score", type=int, metavar="N", help="also score exact match on N held-out rows per task")
    ex_p.set_defaults(func=cmd_demo_examples)
