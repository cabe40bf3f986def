"""Metrics: what lorafleet records with Ray's metrics API (exported on Ray's Prometheus
endpoint), named once here so dashboards and alerts cannot drift from the code."""
