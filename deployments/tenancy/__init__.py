"""Who may do what, how much, and what it cost: pure rules with injected clocks.

    keys.py           API keys (hashed), tenants, roles, the keys-file watcher
    access.py         who may see, use and change which adapter
    admission.py      the ingress's cap on requests in flight
    ratelimit.py      per-key request and token buckets
    request_limits.py per-request bounds (max_tokens, n, prompt tokens) and reservations
    ledger.py         the usage ledger
    usage_report.py   what GET /v1/usage shows to whom

Imports neither Ray nor FastAPI/Starlette (tests/unit/test_layers.py), so every rule is
tested in milliseconds without a fleet.
"""
