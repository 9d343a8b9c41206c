"""Scenario building from the shared data: prices, RTT pairing, trace scaling."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.sim.catalog import RttTable, default_data_dir, find_price, load_prices
from loadtest.sim.service import ServiceCurve
from loadtest.sim.traces import load_token_lengths, load_trace

DATA = default_data_dir()
needs_data = pytest.mark.skipif(
    not (DATA / "traces").is_dir(), reason="shared data not present"
)


@needs_data
def test_client_rtt_uses_the_providers_own_region_in_that_metro():
    table = RttTable.load(DATA / "latency" / "interregion_rtt_all_clouds.csv")
    # Virginia reaches AWS us-west-2 over AWS's us-east-1 -> us-west-2 path
    # (64.269 ms, p50 over a year in aws_interregion_rtt_p50.csv).
    assert table.client_rtt_ms("virginia", "aws", "us-west-2") == pytest.approx(64.269)
    # Azure has no same-region entries: eastus from Virginia takes AWS us-east-1's
    # own same-region RTT (5.349 ms).
    assert table.client_rtt_ms("virginia", "azure", "eastus") == pytest.approx(5.349)


@needs_data
def test_prices_are_full_vm_list_prices():
    rows = load_prices(DATA / "prices" / "gpu_prices.csv")
    row = find_price(rows, "aws", "us-east-1", "g4dn.xlarge")
    assert (row.on_demand_usd_per_hour, row.spot_usd_per_hour) == (0.526, 0.1845)
    with pytest.raises(KeyError):
        # GCP T4 rows price the GPU alone; the simulator never uses them.
        find_price(rows, "gcp", "us-east4", "")


@needs_data
@pytest.mark.parametrize("name", ["worldcup98", "nab_elb", "azure_conv"])
def test_traces_are_scaled_to_the_target_mean_over_the_simulated_window(name):
    trace = load_trace(name, DATA / "traces", target_mean_rps=20_000, warmup_days=1)
    assert float(trace.sim_rates_rps.mean()) == pytest.approx(20_000, rel=1e-9)
    assert trace.warmup_s > 0
    assert np.all(trace.rates_rps >= 0)


@needs_data
def test_token_lengths_are_capped_at_the_model_limit():
    lengths = load_token_lengths(DATA / "traces", 512)
    assert lengths.max() == 512
    assert lengths.min() >= 1


def test_replica_settles_at_the_smallest_batch_that_fills_in_time():
    # Batches of 1..4 take 10, 12, 14, 16 ms. At 150 sequences/s, 1.5 arrive
    # during a batch of one (10 ms): too many; 150 * 12 ms = 1.8 arrive during a
    # batch of two, which holds them: the replica runs batches of 2.
    curve = ServiceCurve((0.010, 0.012, 0.014, 0.016), 128.0)
    assert curve.batch_for_load(150.0) == 2
    assert curve.peak_seq_per_s == pytest.approx(4 / 0.016)
    # Idle: a sequence rides a batch of one at once (10 ms), never late for 15 ms.
    assert curve.late_fraction(0.0, 0.015) == 0.0
    # Busy share at 150/s: 150 * 12 ms / 2 = 0.9; a sequence waits for the batch
    # in progress (uniform over 12 ms) then rides its own: late past 18 ms when
    # the residual exceeds 6 ms, i.e. with probability 0.9 * (24 - 18) / 12 = 0.45.
    assert curve.late_fraction(150.0, 0.018) == pytest.approx(0.45)
