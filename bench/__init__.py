"""lorafleet's benchmarks: a source-tree package, not part of the installed product.

    harness/     plans and fleets (runner), the HTTP load generator, probes
    *.py         drivers, run as `python -m bench.<name>` from the checkout
    workloads/   benchmark and simulator plans (YAML)
    results/     recorded results (JSON) that bench/README.md's tables come from

Imports the product's public modules (`deployments`, `cluster`, `factory`); the
product never imports this package.
"""
