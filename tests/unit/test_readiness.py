"""Which clouds a model must answer from before the gateway calls it ready."""

from __future__ import annotations

import copy

from gateway.config import parse_config
from gateway.ingress import readiness_clouds
from tests.unit.test_config import MINIMAL


def _with_clouds(*floors: int) -> dict:
    data = copy.deepcopy(MINIMAL)
    base = data["clouds"][0]
    data["clouds"] = [
        base
        | {"name": f"c{i}", "placement": f"cloud_{i}", "min_replicas": floor}
        | {"max_replicas": max(floor, 1)}
        for i, floor in enumerate(floors)
    ]
    return data


def test_clouds_that_may_scale_to_zero_do_not_hold_readiness() -> None:
    assert readiness_clouds(parse_config(_with_clouds(1, 0, 2))) == ["c0", "c2"]


def test_with_every_cloud_free_to_scale_to_zero_none_is_required() -> None:
    # An empty list: any one cloud's answer makes a model ready.
    assert readiness_clouds(parse_config(_with_clouds(0, 0))) == []


def test_a_colocated_cloud_always_counts() -> None:
    data = _with_clouds(0)
    data["clouds"][0] |= {"colocated": True, "min_replicas": 1, "max_replicas": 1}

    assert readiness_clouds(parse_config(data)) == ["c0"]
