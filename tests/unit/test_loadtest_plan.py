"""Text mixes, text loading and the request plan that shards share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.plan import build_plan, load_texts, parse_mix


def test_mix_weights_are_normalised() -> None:
    mix = parse_mix("1:8, 4:1.5 ,16:0.5")
    assert mix.sizes == (1, 4, 16)
    # 8 + 1.5 + 0.5 = 10.
    assert mix.weights == pytest.approx((0.8, 0.15, 0.05))
    # 1 * 0.8 + 4 * 0.15 + 16 * 0.05 = 2.2 texts per request.
    assert mix.mean_texts == pytest.approx(2.2)


@pytest.mark.parametrize("spec", ["", "0:1", "2:-1", "a:1", "1:0"])
def test_bad_mix_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_mix(spec)


def test_sampled_text_counts_follow_the_mix() -> None:
    mix = parse_mix("1:0.8,4:0.15,16:0.05")
    plan = build_plan(
        num_requests=40_000, pool_size=100, mix=mix, rng=np.random.default_rng(7)
    )
    sizes, counts = np.unique(plan.num_texts, return_counts=True)
    assert sizes.tolist() == [1, 4, 16]
    # Binomial sd for p=0.05 over 40,000 draws is ~0.0011; 0.005 is > 4 sd.
    assert (counts / 40_000).tolist() == pytest.approx([0.8, 0.15, 0.05], abs=0.005)
    assert plan.text_starts[-1] == plan.num_texts.sum() == len(plan.text_ids)
    assert plan.text_ids.min() >= 0 and plan.text_ids.max() < 100


def test_same_seed_gives_the_same_plan() -> None:
    mix = parse_mix("1:1,2:1")
    a = build_plan(num_requests=50, pool_size=9, mix=mix, rng=np.random.default_rng(3))
    b = build_plan(num_requests=50, pool_size=9, mix=mix, rng=np.random.default_rng(3))
    assert a.num_texts.tolist() == b.num_texts.tolist()
    assert a.text_ids.tolist() == b.text_ids.tolist()


def test_shards_split_requests_round_robin_and_keep_their_texts() -> None:
    pool = [f"text {i}" for i in range(20)]
    offsets_s = np.linspace(0.0, 1.0, 11)
    plan = build_plan(
        num_requests=0,
        pool_size=len(pool),
        mix=parse_mix("1:1,3:1"),
        rng=np.random.default_rng(5),
        offsets_s=offsets_s,
    )
    shards = [plan.shard(k, 3) for k in range(3)]
    # 11 requests over 3 shards: ids 0,3,6,9 / 1,4,7,10 / 2,5,8.
    assert [s.ids.tolist() for s in shards] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    for shard in shards:
        for j, request_id in enumerate(shard.ids):
            assert shard.texts_of(j, pool) == plan.texts_of(int(request_id), pool)
            assert shard.offsets_s is not None
            assert shard.offsets_s[j] == offsets_s[request_id]


def test_texts_come_from_the_named_column_skipping_blanks(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,label\nhello,a\n"  ",b\n"with, comma",c\n')
    assert load_texts(path) == ["hello", "with, comma"]
    with pytest.raises(ValueError, match="no column 'body'"):
        load_texts(path, column="body")
