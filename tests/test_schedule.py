"""s_t of PAPER.md §3: exactly the paper's formulas at paper scale, the same shape rescaled below it."""

import math

import pytest
import torch

from factorial.rows import TABLE2
from factorial.schedule import lr_lambda, step_size_schedule
from factorial.train import compose


@pytest.mark.parametrize("t", [1, 2, 100, 5_000, 9_999, 10_000, 10_001, 50_000, 100_000])
def test_paper_scale_is_the_paper_formula(t):
    assert step_size_schedule(t, warmup=True, warmup_steps=10_000) == pytest.approx(min(1e-6 * t, 1 / math.sqrt(t)), rel=1e-12)
    assert step_size_schedule(t, warmup=False, warmup_steps=10_000) == pytest.approx(min(1e-2, 1 / math.sqrt(t)), rel=1e-12)


def test_rescaled_shape_peaks_at_the_end_of_warmup_and_decays_as_inverse_sqrt():
    W = 60
    s = [step_size_schedule(t, warmup=True, warmup_steps=W) for t in range(1, 601)]
    assert max(s) == pytest.approx(1e-2) and s.index(max(s)) == W - 1
    assert s[239] == pytest.approx(1e-2 * math.sqrt(W / 240))
    flat = [step_size_schedule(t, warmup=False, warmup_steps=W) for t in range(1, W + 1)]
    assert flat == [1e-2] * W
    # after warmup the two schedules are identical
    assert all(step_size_schedule(t, warmup=True, warmup_steps=W) == step_size_schedule(t, warmup=False, warmup_steps=W)
               for t in range(W, 601))


def test_step_zero_is_rejected():
    with pytest.raises(ValueError, match="t=0"):
        step_size_schedule(0, warmup=True, warmup_steps=10)


def test_lambda_lr_drives_the_optimizer_from_step_one():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)  # lr_scale: α_t = 0.1·s_t
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup=True, warmup_steps=10, factor=2.0))
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * 2.0 * 1e-2 * t / 10 for t in (1, 2, 3)])


def test_every_table2_row_composes_to_its_settings():
    assert len(TABLE2) == 22
    for letter, row in TABLE2.items():
        cfg = compose(["scale=smoke", f"row={letter}"])
        assert cfg.row == letter
        for key, value in row.optim.items():
            assert getattr(cfg.optim, key) == value, (letter, key)
    o = compose(["row=O"]).optim
    assert (o.second_moment, o.beta2_exponent, o.clip_threshold, o.relative_step, o.lr_scale) == ("factored", 0.8, 1.0, True, 1.0)
    a = compose(["row=A"]).optim
    assert (a.second_moment, a.beta1, a.beta2_exponent, a.clip_threshold, a.relative_step, a.lr_scale) == (
        "full", 0.0, None, None, False, 0.1)


def test_overrides_on_top_of_a_row_win():
    assert compose(["row=A", "optim.clip_threshold=2.0"]).optim.clip_threshold == 2.0
