"""Where the usage ledger lives (issue 16, item 1, the chart's part): SQLite only for one
writer on a durable volume, PostgreSQL by a DSN from a Secret (an existing server, or a
bundled one for evaluation). The product side is the lead's: the chart renders
`server.usage.backend: postgres` and `server.usage.postgres_dsn_env: <variable>` into
serveConfigV2 and exports the variable from the Secret on every Ray container."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.helm.rendering import CHART, NAMESPACE, RELEASE, ci_values, render_chart

EXISTING = {"usageLedger": {"backend": "postgres", "postgres": {"existingSecret": "ledger-dsn"}},
            "lorafleet": {"deployment": {"ingress_replicas": 3}}}
BUNDLED = {"usageLedger": {"backend": "postgres", "postgres": {"bundled": {"enabled": True}}}}


def _render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_chart(values)
    return str(caught.value)


def _containers(rendered) -> list[dict]:
    pods = [rendered.head_group["template"], *(g["template"] for g in rendered.worker_groups)]
    return [c for p in pods for c in p["spec"]["containers"]]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


REFUSALS = {
    "two ingress replicas on sqlite": ({"lorafleet": {"deployment": {"ingress_replicas": 2}}},
                                       "lorafleet.deployment.ingress_replicas is 2 with the SQLite usage ledger"),
    "s3 adapter store without a ledger path": (
        {"lorafleet": {"adapters": {"uri": "s3://b/a"}}, "adapterStorage": {"type": "s3"}},
        "the ledger would sit in a node-local temp folder"),
    "ledger path on no volume": ({"lorafleet": {"server": {"usage": {"ledger_path": "/var/lib/lorafleet/usage.sqlite"}}}},
                                 'ledger_path "/var/lib/lorafleet/usage.sqlite" is on no mounted volume'),
    "ledger path sharing only a prefix with the store": (
        {"lorafleet": {"server": {"usage": {"ledger_path": "/mnt/adapters2/usage.sqlite"}}}}, "is on no mounted volume"),
    "postgres without a dsn secret": ({"usageLedger": {"backend": "postgres"}},
                                      "set usageLedger.postgres.existingSecret"),
    "postgres with both a secret and the bundled database": (
        {"usageLedger": {"backend": "postgres", "postgres": {"existingSecret": "x", "bundled": {"enabled": True}}}},
        "not both"),
    "bundled database while the ledger is sqlite": ({"usageLedger": {"postgres": {"bundled": {"enabled": True}}}},
                                                    "needs usageLedger.backend: postgres"),
    "postgres with a sqlite path": ({**EXISTING, "lorafleet": {"server": {"usage": {"ledger_path": "/mnt/adapters/u.db"}}}},
                                    "leave it null with usageLedger.backend postgres"),
}


@pytest.mark.parametrize("values, message", REFUSALS.values(), ids=REFUSALS.keys())
def test_ledger_setups_that_lose_or_corrupt_usage_are_refused(values, message):
    assert message in _render_error(values)


def test_sqlite_renders_for_one_ingress_replica_on_the_adapter_volume():
    rendered = render_chart()
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["deployment"]["ingress_replicas"] == 1
    assert app["args"]["server"]["usage"]["backend"] == "sqlite"
    assert "Usage ledger: SQLite at /mnt/adapters/.lorafleet/usage.sqlite" in rendered.notes


def test_sqlite_on_an_extra_volume_is_accepted_with_an_s3_store():
    values = {"lorafleet": {"adapters": {"uri": "s3://b/a"}, "server": {"usage": {"ledger_path": "/var/lib/lorafleet/usage.sqlite"}}},
              "adapterStorage": {"type": "s3"},
              "extraVolumes": [{"name": "ledger", "persistentVolumeClaim": {"claimName": "ledger-rwo"}}],
              "extraVolumeMounts": [{"name": "ledger", "mountPath": "/var/lib/lorafleet"}]}
    (app,) = render_chart(values).serve_config["applications"]
    assert app["args"]["server"]["usage"]["ledger_path"] == "/var/lib/lorafleet/usage.sqlite"


def test_several_ingress_replicas_are_fine_when_no_usage_is_recorded():
    values = {"lorafleet": {"deployment": {"ingress_replicas": 3}, "server": {"usage": {"enabled": False}}}}
    (app,) = render_chart(values).serve_config["applications"]
    assert app["args"]["deployment"]["ingress_replicas"] == 3


def test_postgres_from_an_existing_secret_sets_the_product_fields_and_exports_the_dsn_everywhere():
    rendered = render_chart(EXISTING)
    (app,) = rendered.serve_config["applications"]
    usage = app["args"]["server"]["usage"]
    assert usage["backend"] == "postgres"
    assert usage["postgres_dsn_env"] == "LORAFLEET_USAGE_POSTGRES_DSN"
    assert app["args"]["deployment"]["ingress_replicas"] == 3
    for container in _containers(rendered):
        dsn = _env(container)["LORAFLEET_USAGE_POSTGRES_DSN"]
        assert dsn["valueFrom"]["secretKeyRef"] == {"name": "ledger-dsn", "key": "dsn"}
    assert rendered.of_kind("StatefulSet") == []


def test_the_dsn_variable_and_key_follow_values():
    values = {"usageLedger": {"backend": "postgres", "postgres": {"existingSecret": "pg", "dsnKey": "uri", "dsnEnv": "LEDGER_DSN"}}}
    rendered = render_chart(values)
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["server"]["usage"]["postgres_dsn_env"] == "LEDGER_DSN"
    (worker,) = [c for c in _containers(rendered) if c["name"] == "ray-worker"]
    assert _env(worker)["LEDGER_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "uri"}


def test_the_bundled_database_gets_a_statefulset_service_and_a_secret_whose_dsn_reaches_it():
    rendered = render_chart(BUNDLED)
    name = f"{RELEASE}-lorafleet-postgresql"
    (sts,) = rendered.of_kind("StatefulSet")
    (secret,) = rendered.of_kind("Secret")
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    assert sts["metadata"]["name"] == secret["metadata"]["name"] == name and name in services
    password = secret["stringData"]["password"]
    assert len(password) == 32
    assert secret["stringData"]["dsn"] == f"postgresql://lorafleet:{password}@{name}.{NAMESPACE}.svc:5432/lorafleet"
    assert services[name]["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert _env(container)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    for ray_container in _containers(rendered):
        assert _env(ray_container)["LORAFLEET_USAGE_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "dsn"}


def test_the_bundled_password_is_generated_once_and_kept_across_upgrades():
    # `lookup` reads the live Secret on upgrade; offline it finds nothing, so each render
    # generates a new password: two renders differ, which shows the value is random.
    first = render_chart(BUNDLED, fresh=True).one("Secret")["stringData"]["password"]
    second = render_chart(BUNDLED, fresh=True).one("Secret")["stringData"]["password"]
    assert first != second
    template = (CHART / "templates" / "postgresql.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template
    assert first.isalnum()  # safe inside the DSN without escaping


def test_ci_s3_values_keep_usage_in_postgres_with_two_ingress_replicas():
    rendered = render_chart(ci_values("s3-values.yaml"))
    (app,) = rendered.serve_config["applications"]
    assert app["args"]["deployment"]["ingress_replicas"] == 2
    assert app["args"]["server"]["usage"]["backend"] == "postgres"
