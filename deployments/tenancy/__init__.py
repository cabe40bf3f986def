"""Who may do what, how much, and what it cost: pure rules with injected clocks.

    keys.py           API keys (hashed), tenants, roles, the keys-file watcher
    access.py         who may see, use and change which adapter
    admission.py      the ingress's cap on requests in flight
    ratelimit.py      per-key request and token buckets (in memory, 1/replicas per replica)
    ratelimit_shared.py  the same limits exact across replicas, buckets in a shared store
    ratelimit_postgres.py  those buckets in PostgreSQL (one statement per request)
    request_limits.py per-request bounds (max_tokens, n, prompt tokens) and reservations
    ledger.py         the usage ledger (batches, the write-ahead journal, exactly once)
    journal.py        the ledger's write-ahead journal files
    ledger_store.py   the ledger's backend interface and shared queries
    ledger_sqlite.py, ledger_postgres.py  the two backends
    postgres.py       PostgreSQL connections, schema, errors without the DSN
    stores.py         ledger and limiter chosen from the config (server.usage.backend)
    usage_report.py   what GET /v1/usage shows to whom

Imports neither Ray nor FastAPI/Starlette (tests/unit/test_layers.py), so every rule is
tested in milliseconds without a fleet.
"""
