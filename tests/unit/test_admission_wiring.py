"""The latency-following admission limit is what `server.max_added_latency_s` says: off
unless set (a burst the engines can batch is served, slowly, not partly refused), and
when set, each base's gate keeps it with that bound and one request per engine replica
as its floor. Through the real config and context, scripted engine."""

from factory.demo_assets import BASE_NAME
from tests.api_harness import ApiHarness


def test_the_latency_limit_is_off_by_default(tmp_path, demo_assets):
    api = ApiHarness.create(tmp_path, demo_assets / "adapters", demo_assets / "base")
    assert api.ctx.admissions[BASE_NAME].latency is None


def test_the_latency_limit_takes_its_bound_from_the_config_and_its_floor_from_the_replicas(tmp_path, demo_assets):
    api = ApiHarness.create(tmp_path, demo_assets / "adapters", demo_assets / "base",
                            config={"server": {"max_added_latency_s": 2.5}, "deployment": {"num_replicas": 3}})
    limit = api.ctx.admissions[BASE_NAME].latency
    assert limit is not None and limit.max_wait_s == 2.5 and limit.floor == 3
