"""The dynamic batcher on its own: what forms a batch, how outputs go back, how failures stay apart."""

import asyncio

import numpy as np
import pytest

from toolkit.serve.batching import BatchPolicy, DynamicBatcher, concat, split


class Doubler:
    """A model in numpy: y = 2x, refusing negative values; it records the rows of each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, feeds):
        x = feeds["x"]
        self.calls.append(x.shape[0])
        if (x < 0).any():
            raise RuntimeError("negative input")
        return {"y": 2 * x}


def rows(n, value=1.0, width=3):
    return {"x": np.full((n, width), value, dtype=np.float32)}


async def submit_all(batcher, requests):
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.close()


def test_split_gives_each_request_its_rows_back():
    merged = concat([rows(1, 1.0), rows(3, 2.0), rows(2, 3.0)])
    assert merged["x"].shape == (6, 3)
    parts = split(merged, [1, 3, 2])
    assert [p["x"].shape[0] for p in parts] == [1, 3, 2]
    assert [float(p["x"][0, 0]) for p in parts] == [1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="not 5 rows"):
        split(merged, [2, 3])


def test_concurrent_requests_run_as_one_batch_up_to_the_row_limit():
    model = Doubler()
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=8, max_delay_ms=200))
    answers = asyncio.run(submit_all(batcher, [rows(1, float(i)) for i in range(12)]))
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer["y"], np.full((1, 3), 2.0 * i, np.float32))
    assert sum(model.calls) == 12 and max(model.calls) == 8  # a full batch of 8, then the rest
    assert len(model.calls) < 12


def test_a_lone_request_waits_at_most_the_delay_then_runs_alone():
    model = Doubler()
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=32, max_delay_ms=1))
    (answer,) = asyncio.run(submit_all(batcher, [rows(2, 1.5)]))
    assert model.calls == [2] and float(answer["y"][0, 0]) == 3.0


def test_requests_of_different_shapes_do_not_share_a_batch():
    model = Doubler()
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=32, max_delay_ms=100))
    answers = asyncio.run(submit_all(batcher, [rows(1, 1.0, width=3), rows(1, 2.0, width=5), rows(1, 3.0, width=3)]))
    assert [a["y"].shape for a in answers] == [(1, 3), (1, 5), (1, 3)]
    assert sorted(model.calls) == [1, 2]  # the two of width 3 together, the one of width 5 alone


def test_a_request_bigger_than_the_limit_runs_by_itself():
    model = Doubler()
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=4, max_delay_ms=50))
    answers = asyncio.run(submit_all(batcher, [rows(10), rows(1)]))
    assert answers[0]["y"].shape == (10, 3) and 10 in model.calls


def test_a_failing_request_fails_alone_and_the_others_are_answered():
    model = Doubler()
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=16, max_delay_ms=100))
    answers = asyncio.run(submit_all(batcher, [rows(1, 1.0), rows(1, -1.0), rows(1, 2.0)]))
    assert isinstance(answers[1], RuntimeError) and "negative" in str(answers[1])
    assert float(answers[0]["y"][0, 0]) == 2.0 and float(answers[2]["y"][0, 0]) == 4.0


def test_observe_reports_queue_time_and_rows_of_each_batch():
    seen = []
    batcher = DynamicBatcher(Doubler(), BatchPolicy(max_batch_size=8, max_delay_ms=100),
                             observe=lambda waits, n: seen.append((len(waits), n)))
    asyncio.run(submit_all(batcher, [rows(2), rows(3)]))
    assert seen == [(2, 5)]


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        BatchPolicy(max_batch_size=0)
    with pytest.raises(ValueError):
        BatchPolicy(max_delay_ms=-1)
