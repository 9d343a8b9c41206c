"""The deployment config: shipped files load; bad ones name field, value, rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gateway.config import (
    autoscaler_settings,
    load_config,
    parse_config,
    router_settings,
)
from gateway.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "models": [{"name": "demo-intents", "checkpoint": "models/demo-intents"}],
    "clouds": [
        {
            "name": "aws-us-east-1",
            "provider": "aws",
            "region": "us-east-1",
            "accelerator": "T4",
            "on_demand_usd_per_hour": 0.526,
            "spot_usd_per_hour": 0.1845,
            "placement": "cloud_aws_use1",
        }
    ],
}


def with_change(path: tuple, value: object) -> dict:
    data = copy.deepcopy(MINIMAL)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_shipped_configs_load_and_convert_to_cloud_specs(name: str) -> None:
    config = load_config(REPO_ROOT / "configs" / name)

    specs = config.cloud_specs()
    assert len(specs) == 3
    assert {s.name for s in specs} == {c.name for c in config.clouds}
    assert len({c.placement for c in config.clouds}) == 3
    assert router_settings(config).slo_ms == config.slo.latency_ms


def test_local_config_has_cheap_far_and_dear_near_clouds() -> None:
    config = load_config(REPO_ROOT / "configs" / "local.yaml")
    by_price = sorted(config.clouds, key=lambda c: c.to_spec().replica_usd_per_hour)
    cheap, dear = by_price[0], by_price[-1]

    assert cheap.emulation is not None and dear.emulation is not None
    # The cheapest cloud is the farthest and the first to saturate.
    assert cheap.emulation.rtt_ms > dear.emulation.rtt_ms
    caps = [c.emulation.max_seq_per_s for c in by_price if c.emulation]
    assert caps[0] is not None and all(cap is None or cap > caps[0] for cap in caps[1:])


def test_relative_checkpoint_resolves_against_the_repo_when_absent_beside_config(
    tmp_path: Path,
) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)

    assert config.models[0].checkpoint == REPO_ROOT / "models" / "demo-intents"


def test_relative_checkpoint_prefers_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "demo-intents").mkdir(parents=True)

    config = parse_config(MINIMAL, base_dir=tmp_path)

    assert config.models[0].checkpoint == tmp_path / "models" / "demo-intents"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("clouds", 0, "max_replicas"),
            0,
            "clouds.aws-us-east-1.max_replicas: value 0",
        ),
        (
            ("models", 0, "max_batch_size"),
            "lots",
            "models.demo-intents.max_batch_size: value 'lots'",
        ),
        (("slo",), {"latency_ms": -5}, "slo.latency_ms: value -5"),
        (("clouds", 0, "placement"), "bad resource!", "clouds.aws-us-east-1.placement"),
        (("http",), {"port": 70000}, "http.port: value 70000"),
        (("surprise",), 1, "surprise"),
    ],
)
def test_invalid_field_is_named_with_its_value(
    path: tuple, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_change(path, value))

    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_spot_without_a_spot_price_is_rejected() -> None:
    data = with_change(("clouds", 0, "use_spot"), True)
    del data["clouds"][0]["spot_usd_per_hour"]

    with pytest.raises(ConfigError, match="use_spot=true needs spot_usd_per_hour"):
        parse_config(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lanes": 4, "num_threads": 2}, "lanes=4 must be <= num_threads=2"),
        ({"lanes": 2, "backend": "vllm"}, "lanes=2 needs backend torch"),
    ],
)
def test_lanes_must_fit_the_threads_and_the_backend(change: dict, message: str) -> None:
    data = copy.deepcopy(MINIMAL)
    data["models"][0].update(change)

    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_duplicate_cloud_names_are_rejected() -> None:
    data = copy.deepcopy(MINIMAL)
    twin = dict(data["clouds"][0], placement="cloud_other")
    data["clouds"].append(twin)

    with pytest.raises(ConfigError, match="cloud names must be unique"):
        parse_config(data)


def test_unknown_router_field_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"router\.slo_budget: unknown"):
        parse_config(with_change(("router",), {"slo_budget": 3}))


def test_unknown_routing_policy_is_rejected_with_the_known_ones() -> None:
    data = copy.deepcopy(MINIMAL)
    data["routing_policy"] = "fastest"

    with pytest.raises(ConfigError, match=r"routing_policy.*'fastest'.*slo_cost"):
        parse_config(data)


def test_router_slo_is_taken_from_the_slo_block_only() -> None:
    with pytest.raises(ConfigError, match="set slo.latency_ms instead"):
        parse_config(with_change(("router",), {"slo_ms": 100}))


def test_invalid_router_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match="half_life_s must be > 0"):
        parse_config(with_change(("router",), {"half_life_s": 0}))


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)

    with pytest.raises(Exception, match="frozen"):
        config.slo.latency_ms = 1.0  # type: ignore[misc]


def test_unreadable_or_malformed_file_is_one_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_round_trip_of_a_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))

    config = load_config(path)

    assert config.http.host == "127.0.0.1"
    assert config.cloud_specs()[0].on_demand_usd_per_hour == 0.526


def test_autoscaler_block_is_checked_against_the_autoscaler_settings() -> None:
    config = parse_config(with_change(("autoscaler",), {"downscale_delay_s": 120}))

    settings = autoscaler_settings(config)

    assert settings.downscale_delay_s == 120
    assert settings.slo_ms == config.slo.latency_ms
    with pytest.raises(ConfigError, match="autoscaler.drain_s must be >= 0"):
        parse_config(with_change(("autoscaler",), {"drain_s": -1}))


def test_the_forecast_margin_spends_the_slo_miss_allowance_unless_set() -> None:
    config = parse_config(with_change(("slo",), {"latency_ms": 150, "quantile": 0.99}))
    assert autoscaler_settings(config).overload_budget == pytest.approx(0.01)

    kept = parse_config(with_change(("autoscaler",), {"overload_budget": 0.002}))
    assert autoscaler_settings(kept).overload_budget == 0.002

    # null: the margin is the forecast_confidence quantile of the errors.
    plain = parse_config(with_change(("autoscaler",), {"overload_budget": None}))
    assert autoscaler_settings(plain).overload_budget is None


def test_a_colocated_cloud_is_sized_by_the_ingress() -> None:
    data = with_change(("clouds", 0, "colocated"), True)
    data["ingress"] = {"num_replicas": 2}
    with pytest.raises(ConfigError, match="must both equal ingress.num_replicas"):
        parse_config(data)

    data["clouds"][0] |= {"min_replicas": 2, "max_replicas": 2}
    config = parse_config(data)

    assert config.colocated_cloud is not None
    assert config.colocated_cloud.name == "aws-us-east-1"


def test_at_most_one_cloud_is_colocated() -> None:
    data = with_change(("clouds", 0, "colocated"), True)
    second = copy.deepcopy(data["clouds"][0]) | {
        "name": "aws-2",
        "placement": "cloud_aws_2",
    }
    data["clouds"].append(second)
    with pytest.raises(ConfigError, match="at most one cloud may be colocated"):
        parse_config(data)


def test_the_ingress_is_placed_by_its_own_resource_or_by_a_colocated_cloud() -> None:
    data = with_change(("ingress",), {"placement": "gateway"})
    assert parse_config(data).ingress.placement == "gateway"

    data["clouds"][0] |= {"colocated": True, "min_replicas": 1, "max_replicas": 1}
    with pytest.raises(ConfigError, match="both place the ingress"):
        parse_config(data)


def test_direct_ingress_ports_are_one_per_replica_and_clear_of_the_proxies() -> None:
    from gateway.app import direct_ingress_env

    data = with_change(("http",), {"port": 8000})
    data["grpc"] = {"enabled": True, "port": 9000}
    data["ingress"] = {"num_replicas": 2, "direct_http_port": 8100}
    with pytest.raises(ConfigError, match="set ingress.direct_grpc_port too"):
        parse_config(data)

    data["ingress"]["direct_grpc_port"] = 7999  # replica 1 would take 8000
    with pytest.raises(ConfigError, match="port 8000 .* is also http.port"):
        parse_config(data)

    data["ingress"]["direct_grpc_port"] = 9100
    env = direct_ingress_env(parse_config(data))
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve hands out [min, max): one port per ingress replica.
    assert (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"],
    ) == ("8100", "8102", "9100", "9102")
    # Off unless configured, whatever the shell exported.
    assert direct_ingress_env(parse_config(MINIMAL)) == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"
    }


def test_serve_logs_warnings_only_unless_the_access_log_is_on() -> None:
    assert parse_config(MINIMAL).ingress.serve_log_level == "WARNING"

    data = with_change(("ingress",), {"access_log": True})
    with pytest.raises(ConfigError, match="access_log needs ingress.serve_log_level"):
        parse_config(data)

    data["ingress"]["serve_log_level"] = "INFO"
    assert parse_config(data).ingress.access_log
