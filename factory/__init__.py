"""The model factory: turn a dataset into a validated, servable LoRA adapter.

`train(config) -> Path` fine-tunes a peft LoRA on a base model from a JSONL dataset
and writes the adapter plus a `training_manifest.json` (what went in, what came out);
`merge_adapters(...)` combines adapters with peft's weighted-adapter methods. Both
check their output with the same validation the fleet uses before it serves an
adapter, so what the factory writes is what the fleet accepts.
"""
