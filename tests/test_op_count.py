"""The CPU proxy for GPU launch overhead, held in CI: ATen ops a training step dispatches, the
library's ``train()`` against a bare loop on the same model and batches (benchmarks/op_count.py)."""

from __future__ import annotations

import pytest

from benchmarks import op_count


@pytest.mark.parametrize("case", op_count.cases(tiny=False), ids=lambda c: c.name)
def test_library_step_dispatches_at_most_10_percent_more_ops_than_a_bare_loop(case: op_count.Case) -> None:
    r = op_count.measure(case, limit=600)
    lib, bare = r["library"], r["bare"]
    assert lib["steps_counted"] >= 5 and bare["steps_counted"] >= 5
    # A step is hundreds of ops (forward, backward, AdamW): the bookkeeping is a few of them.
    assert bare["ops"] > 200
    assert r["ratio"] <= op_count.TARGET, r["library_minus_bare_by_op"]
    assert r["mean_ratio"] <= op_count.TARGET, r["library_minus_bare_by_op"]
    extra = r["library_minus_bare_by_op"]
    # No per-step host read-back (``.item()``/``bool()`` of a tensor) and no per-tensor EMA update.
    assert "_local_scalar_dense" not in extra and "detach" not in extra
    if case.ema_decay:
        assert extra.get("_foreach_lerp_") == 1


def test_the_counter_sees_what_a_per_step_read_back_costs() -> None:
    """The proxy is sensitive: a loop that reads its loss back every step shows one more op per step."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    counter = op_count.OpCounter()
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = register_optimizer_step_post_hook(counter.mark)
    try:
        with counter:
            for i in range(6):
                loss = model(torch.randn(3, 4)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i >= 3:
                    loss.item()
    finally:
        handle.remove()
    diffs = [b[0] - a[0] for a, b in zip(counter.marks, counter.marks[1:])]
    assert diffs[1] == diffs[2] and diffs[3] == diffs[4] == diffs[1] + 1
    assert counter.windows[3]["_local_scalar_dense"] == 1 and "_local_scalar_dense" not in counter.windows[1]
