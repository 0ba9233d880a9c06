"""The optimizer against hand-computed cases and against independent implementations.

The numpy reference below is written from PAPER.md §2 directly (row/column *sums*, float64,
plain formulas), not from factorial's code, so a shared mistake is unlikely.
"""

from __future__ import annotations

import copy
import io
import math

import os
import shutil

import numpy as np
import pytest
import torch

from factorial.optim import Adafactor
from factorial.optim import functional as F
from factorial.optim import native as native_kernel


def expected_kernel_status() -> str:
    """What the kernel's status must be on this machine: "loaded" wherever a C compiler is on PATH and the
    kernel is not switched off; a kernels.c that does not compile fails the suite instead of skipping."""
    cc = os.environ.get("CC", "cc")
    if not native_kernel.enabled_by_env():
        return "unavailable: FACTORIAL_NATIVE=0"
    if shutil.which(cc) is None:
        return f"unavailable: no C compiler {cc!r} on PATH (set CC)"
    return "loaded"


def require_native(native) -> None:
    """Skip a C-kernel case only where this machine has no C compiler (the other paths still run); where it
    has one, a kernel that does not build or load is a failure."""
    if native and native_kernel.kernel() is None:
        why = native_kernel.why_unavailable()
        if expected_kernel_status() == "loaded":
            pytest.fail(f"a C compiler is on PATH but the C kernel is unavailable: {why}")
        pytest.skip(f"C kernel unavailable: {why}")


def test_the_c_kernel_builds_wherever_a_compiler_exists():
    assert native_kernel.status() == expected_kernel_status(), native_kernel.why_unavailable()


@pytest.fixture
def fresh_kernel():
    """The kernel forgotten before and after the test, so that what the test sets in the environment
    (CC, FACTORIAL_NATIVE, the cache) is what the next lookup sees, and nothing of it outlives the test."""
    native_kernel.reset()
    yield
    native_kernel.reset()

# --- an independent reference (PAPER.md §2, Algorithms 3, 4 and 5) -------------------------------


def ref_beta2_hat(t, beta2, exponent):
    if exponent is not None:
        return 1.0 - t ** (-exponent)
    return beta2 * (1 - beta2 ** (t - 1)) / (1 - beta2**t)


def ref_run(x0, grads, *, lr, mode, beta2=0.999, exponent=None, d=None, relative=False, eps1=1e-30, eps2=1e-3):
    """Run Alg. 4 (matrix) / Alg. 5 (vector) with β1 = 0 over a list of gradients, in float64.

    Returns the parameter after each step and the RMS(U) of each step.
    """
    x = np.array(x0, dtype=np.float64)
    full = mode == "full" or x.ndim < 2
    V = np.zeros_like(x)
    n, m = (x.shape if x.ndim == 2 else (None, None))
    R = np.zeros(n) if not full else None
    C = np.zeros(m) if not full else None
    xs, rms_us = [], []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        alpha = max(eps2, math.sqrt(np.mean(x**2))) * lr if relative else lr
        b = ref_beta2_hat(t, beta2, exponent)
        g2 = g * g + eps1
        if full:
            V = b * V + (1 - b) * g2
            Vhat = V
        else:
            R = b * R + (1 - b) * g2.sum(axis=1)  # rowsum(G² + ε1): n values
            C = b * C + (1 - b) * g2.sum(axis=0)  # colsum(G² + ε1): m values
            Vhat = np.empty_like(x)
            for i in range(n):
                for j in range(m):
                    if mode == "factored":
                        Vhat[i, j] = R[i] * C[j] / R.sum()
                    elif mode == "row":
                        Vhat[i, j] = R[i] / m  # the mean of row i
                    elif mode == "col":
                        Vhat[i, j] = C[j] / n  # the mean of column j
        U = g / np.sqrt(Vhat)
        rms_u = math.sqrt(np.mean(U**2))
        if d is not None:
            U = U / max(1.0, rms_u / d)
        x = x - alpha * U
        xs.append(x.copy())
        rms_us.append(rms_u)
    return xs, rms_us


def run_ours(x0, grads, **kwargs):
    p = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float32))
    opt = Adafactor([p], **kwargs)
    xs, rms_us = [], []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        xs.append(p.detach().double().numpy().copy())
        rms_us.append(opt.state[p]["update_rms"].item())
    return xs, rms_us, opt.state[p]


def rng_case(shape, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=shape)
    # Rows and columns of different scales, so the modes give different answers.
    scale = np.exp(rng.normal(size=shape[-1])) if len(shape) else 1.0
    if len(shape) == 2:
        scale = np.exp(rng.normal(size=(shape[0], 1))) * scale
    grads = [rng.normal(size=shape) * scale for _ in range(steps)]
    return x0, grads


SETTINGS = [
    dict(lr=0.1, exponent=None, d=None, relative=False),
    dict(lr=0.1, exponent=0.8, d=1.0, relative=True),  # Alg. 6
    dict(lr=0.05, exponent=0.5, d=2.0, relative=False, beta2=0.9),
]


def _kwargs_ours(mode, s):
    return dict(
        lr=s["lr"],
        second_moment=mode,
        beta2=s.get("beta2", 0.999),
        beta2_exponent=s["exponent"],
        clip_threshold=s["d"],
        relative_step=s["relative"],
    )


@pytest.mark.parametrize("mode", ["factored", "row", "col", "full"])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_matrix_matches_hand_computed_alg4(mode, setting):
    s = SETTINGS[setting]
    x0, grads = rng_case((4, 3))
    ref_xs, ref_rms = ref_run(
        x0, grads, lr=s["lr"], mode=mode, beta2=s.get("beta2", 0.999), exponent=s["exponent"], d=s["d"], relative=s["relative"]
    )
    xs, rms_us, _ = run_ours(x0, grads, **_kwargs_ours(mode, s))
    for t in range(3):
        np.testing.assert_allclose(xs[t], ref_xs[t], rtol=1e-5, atol=1e-6)
        assert rms_us[t] == pytest.approx(ref_rms[t], rel=1e-5)


@pytest.mark.parametrize("mode", ["factored", "row", "col", "full"])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_vector_matches_hand_computed_alg5(mode, setting):
    """Alg. 5: vectors keep a full accumulator in every mode."""
    s = SETTINGS[setting]
    x0, grads = rng_case((5,))
    ref_xs, _ = ref_run(
        x0, grads, lr=s["lr"], mode="full", beta2=s.get("beta2", 0.999), exponent=s["exponent"], d=s["d"], relative=s["relative"]
    )
    xs, _, state = run_ours(x0, grads, **_kwargs_ours(mode, s))
    assert set(state) >= {"exp_avg_sq"} and "exp_avg_sq_row" not in state
    for t in range(3):
        np.testing.assert_allclose(xs[t], ref_xs[t], rtol=1e-5, atol=1e-6)


def test_first_step_by_hand():
    """One step of Alg. 4 on a 2×2 matrix, worked out on paper.

    G = [[1, 2], [3, 4]], β̂21 = 0 so R = rowsums of G² = [5, 25], C = colsums = [10, 20], sum = 30.
    V̂ = R Cᵀ / 30 = [[5/3, 10/3], [25/3, 50/3]];  U = G/√V̂.  Absolute step α = 0.5, no clipping.
    """
    G = np.array([[1.0, 2.0], [3.0, 4.0]])
    Vhat = np.array([[5 / 3, 10 / 3], [25 / 3, 50 / 3]])
    expected = -0.5 * G / np.sqrt(Vhat)
    xs, rms_us, state = run_ours(np.zeros((2, 2)), [G], lr=0.5, clip_threshold=None, relative_step=False)
    np.testing.assert_allclose(xs[0], expected, rtol=1e-6)
    # The accumulators hold means: rows [5, 25]/2, columns [10, 20]/2 (same V̂ as the sums).
    np.testing.assert_allclose(state["exp_avg_sq_row"].numpy(), [2.5, 12.5], rtol=1e-6)
    np.testing.assert_allclose(state["exp_avg_sq_col"].numpy(), [5.0, 10.0], rtol=1e-6)
    assert rms_us[0] == pytest.approx(math.sqrt(np.mean(G**2 / Vhat)), rel=1e-6)


# --- independent implementations ------------------------------------------------------------------


def _small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Embedding(11, 8),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 11),
    )


def _train(model, opt, steps=100, seed=1):
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randint(0, 11, (8, 4), generator=g)
        y = torch.randint(0, 11, (8,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_corner_matches_torch_adam(foreach):
    """β1 = 0.9, full V, constant β2, no clipping, absolute step = Adam with ε = 0 (our ε1 = 0)."""
    ours_model, adam_model = _small_model(), _small_model()
    ours = Adafactor(
        ours_model.parameters(), lr=1e-2, beta1=0.9, beta2=0.999, beta2_exponent=None, second_moment="full",
        clip_threshold=None, relative_step=False, eps1=0.0, foreach=foreach,
    )
    adam = torch.optim.Adam(adam_model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=0.0)
    # Embedding rows that get no gradient in a step have g = 0; with ε = 0 both give 0/0 only if a
    # row never saw a gradient, which the 8×4 random batches here rule out after step 1.
    torch.manual_seed(5)
    l_ours, l_adam = _train(ours_model, ours), _train(adam_model, adam)
    np.testing.assert_allclose(l_ours, l_adam, rtol=1e-5)
    for a, b in zip(ours_model.parameters(), adam_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)


def test_alg6_matches_torch_adafactor():
    """Alg. 6 (factored, β1 = 0, β̂2t = 1 − t^−0.8, d = 1, relative step, ρ = 1e−2) against torch.optim.Adafactor.

    The two differ only in where ε1 enters: the paper (and we) add ε1 = 1e−30 to G² before
    the means; torch clamps the row mean at ε1 and V̂ at ε1², with ε1 = float32 eps by default.
    Neither matters unless an entry of V̂ falls below ~1e−14, which gradients of this model never do,
    so the remaining difference is float32 rounding of two evaluation orders (torch forms V̂ = R Cᵀ/mean R
    and takes its rsqrt; we multiply rsqrt(R/mean R) by rsqrt(C)). Measured over these 100 steps:
    losses agree to 2e−7 relative, parameters to 5e−7 absolute. The tolerance (1e−5 relative on losses,
    1e−5 relative + 2e−6 absolute on parameters) leaves room for another BLAS or CPU while a wrong
    formula (β̂2t, the factoring, clipping or the relative step) gives differences of 1e−3 and more
    within a few steps (see test_adam_parity_fails_when_a_knob_differs for the same margin).
    """
    ours_model, ref_model = _small_model(), _small_model()
    ours = Adafactor(ours_model.parameters(), lr=1e-2, beta2_exponent=0.8, second_moment="factored", clip_threshold=1.0,
                     relative_step=True, eps1=1e-30, eps2=1e-3)
    ref = torch.optim.Adafactor(ref_model.parameters(), lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0)
    l_ours, l_ref = _train(ours_model, ours), _train(ref_model, ref)
    np.testing.assert_allclose(l_ours, l_ref, rtol=1e-5)
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)


def test_adam_parity_fails_when_a_knob_differs():
    """The parity tests can fail: a different β2 is visible within 100 steps."""
    ours_model, adam_model = _small_model(), _small_model()
    ours = Adafactor(ours_model.parameters(), lr=1e-2, beta1=0.9, beta2=0.99, second_moment="full", clip_threshold=None,
                     relative_step=False, eps1=0.0)
    adam = torch.optim.Adam(adam_model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=0.0)
    l_ours, l_adam = _train(ours_model, ours), _train(adam_model, adam)
    assert not np.allclose(l_ours, l_adam, rtol=1e-3)


# --- single knobs -------------------------------------------------------------------------------------


def test_clipping_shrinks_large_and_never_enlarges_small_updates():
    big = torch.full((4, 4), 3.0)
    F.clip_(big, F.rms(big), 1.0)
    assert F.rms(big).item() == pytest.approx(1.0)
    small = torch.full((4, 4), 0.25)
    F.clip_(small, F.rms(small), 1.0)
    assert torch.equal(small, torch.full((4, 4), 0.25))
    untouched = torch.full((3,), 7.0)
    F.clip_(untouched, F.rms(untouched), None)
    assert torch.equal(untouched, torch.full((3,), 7.0))


def test_clipping_in_the_optimizer_bounds_the_step():
    """A gradient 100× larger than the last one: V̂ lags behind (β̂22 ≈ 0.5), so RMS(U) ≈ √2 > d = 1,
    and the clipped step has RMS exactly d·α. Without clipping it would be √2·α."""
    steps = {}
    for d in (1.0, None):
        p = torch.nn.Parameter(torch.zeros(4, 4))
        opt = Adafactor([p], lr=0.1, beta2_exponent=None, second_moment="full", clip_threshold=d, relative_step=False)
        p.grad = torch.full((4, 4), 0.01)
        opt.step()
        before = p.detach().clone()
        p.grad = torch.ones(4, 4)
        opt.step()
        rms_u = opt.state[p]["update_rms"].item()
        steps[d] = F.rms(p.detach() - before).item()
    b = 0.999 * (1 - 0.999) / (1 - 0.999**2)
    assert rms_u == pytest.approx(1 / math.sqrt(b * 1e-4 + (1 - b)), rel=1e-5)
    assert steps[1.0] == pytest.approx(0.1, rel=1e-5)
    assert steps[None] == pytest.approx(0.1 * rms_u, rel=1e-5)


@pytest.mark.parametrize("mode,axis", [("row", 1), ("col", 0)])
def test_row_and_col_broadcast_the_right_axis(mode, axis):
    """G[i, j] = a_i·b_j. Row means: V̂[i, j] = a_i²·mean(b²), so U depends on j only (constant down
    each column); column means: U depends on i only (constant along each row)."""
    a = torch.tensor([1.0, 10.0, 0.1])
    b = torch.tensor([2.0, 0.5, 1.0, 4.0])
    G = a[:, None] * b[None, :]
    p = torch.nn.Parameter(torch.zeros(3, 4))
    opt = Adafactor([p], lr=1.0, second_moment=mode, clip_threshold=None, relative_step=False)
    p.grad = G
    opt.step()
    U = -p.detach()
    if mode == "row":
        expected = (b / b.square().mean().sqrt()).expand(3, 4)
        assert opt.state[p]["exp_avg_sq_row"].shape == (3,)
    else:
        expected = (a / a.square().mean().sqrt())[:, None].expand(3, 4)
        assert opt.state[p]["exp_avg_sq_col"].shape == (4,)
    torch.testing.assert_close(U, expected)
    # and the other axis really varies
    assert U.std(dim=axis).max() > 0.1


@pytest.mark.parametrize("mode", ["factored", "row", "col"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 3, 5)])
def test_high_rank_tensors_factor_the_last_two_dims(mode, shape):
    """A rank-3/4 tensor behaves as independent matrices over its leading dimensions (with per-tensor
    clipping and step size off, which would couple them)."""
    torch.manual_seed(0)
    grads = [torch.randn(shape) * torch.rand(shape[-1]).add(0.1) for _ in range(3)]
    p = torch.nn.Parameter(torch.zeros(shape))
    kw = dict(lr=0.1, second_moment=mode, clip_threshold=None, relative_step=False)
    opt = Adafactor([p], **kw)
    lead = int(np.prod(shape[:-2]))
    slices = [torch.nn.Parameter(torch.zeros(shape[-2:])) for _ in range(lead)]
    opt_slices = Adafactor(slices, **kw)
    for g in grads:
        p.grad = g
        opt.step()
        for s, gs in zip(slices, g.reshape(lead, *shape[-2:])):
            s.grad = gs.clone()
        opt_slices.step()
    torch.testing.assert_close(p.detach().reshape(lead, *shape[-2:]), torch.stack([s.detach() for s in slices]))
    st = opt.state[p]
    if mode in ("factored", "row"):
        assert st["exp_avg_sq_row"].shape == shape[:-1]
    if mode in ("factored", "col"):
        assert st["exp_avg_sq_col"].shape == shape[:-2] + shape[-1:]
    assert "exp_avg_sq" not in st


def test_factored_state_is_sublinear():
    """C15: factored, β1 = 0 keeps n + m numbers per n×m matrix, never the full V̂."""
    p = torch.nn.Parameter(torch.randn(64, 32))
    opt = Adafactor([p])
    p.grad = torch.randn(64, 32)
    opt.step()
    numel = sum(v.numel() for v in opt.state[p].values() if torch.is_tensor(v))
    assert numel == 64 + 32 + 1  # R, C and the 0-d update_rms


def test_zero_initialised_parameters_move_by_eps2():
    """Relative step: α = max(ε2, RMS(0))·ρ = ε2·ρ, so a zero tensor moves by ε2·ρ·Û."""
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = Adafactor([p], lr=0.5, eps2=1e-3, clip_threshold=None, second_moment="full")
    p.grad = torch.ones(3, 3)  # U = 1 everywhere at step 1
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3, 3), -0.5e-3))
    p2 = torch.nn.Parameter(torch.zeros(3, 3))
    opt2 = Adafactor([p2], lr=0.5, eps2=0.0, clip_threshold=None)
    p2.grad = torch.ones(3, 3)
    opt2.step()
    assert torch.equal(p2.detach(), torch.zeros(3, 3))  # without the floor it cannot move


def test_beta2_schedule_with_c_one_is_the_plain_average():
    """§7: c = 1 makes V the average of all past G² (+ ε1)."""
    p = torch.nn.Parameter(torch.zeros(4))
    opt = Adafactor([p], beta2_exponent=1.0, second_moment="full", eps1=0.0)
    gs = [torch.randn(4) for _ in range(5)]
    for g in gs:
        p.grad = g
        opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], torch.stack(gs).square().mean(0))


def test_decay_rates():
    assert F.bias_corrected_rate(0.999, 1) == 0.0
    assert F.scheduled_rate(0.8, 1) == 0.0
    assert F.bias_corrected_rate(0.9, 2) == pytest.approx(0.9 * 0.1 / (1 - 0.81))
    assert F.scheduled_rate(0.5, 4) == pytest.approx(0.5)
    assert F.bias_corrected_rate(0.999, 10**6) == pytest.approx(0.999)


def test_update_momentum_is_an_ema_of_the_scaled_clipped_update():
    """momentum="update" (T2T / HF): m_t = β1·m_{t−1} + (1 − β1)·α·Û_t, X ← X − m_t, m_0 = 0."""
    torch.manual_seed(0)
    gs = [torch.randn(3, 4) for _ in range(3)]
    p = torch.nn.Parameter(torch.zeros(3, 4))
    q = torch.nn.Parameter(torch.zeros(3, 4))
    common = dict(lr=0.1, clip_threshold=1.0, relative_step=False, second_moment="factored")
    with_m = Adafactor([p], beta1=0.9, momentum="update", **common)
    without = Adafactor([q], beta1=0.0, **common)
    m = torch.zeros(3, 4)
    x = torch.zeros(3, 4)
    for g in gs:
        q.data.zero_()
        q.grad = g.clone()
        without.step()
        scaled_update = -q.detach()  # α·Û of this step
        m = 0.9 * m + 0.1 * scaled_update
        x = x - m
        p.grad = g.clone()
        with_m.step()
    torch.testing.assert_close(p.detach(), x)


def test_gradient_momentum_differs_from_update_momentum():
    torch.manual_seed(0)
    gs = [torch.randn(6, 5) * (i + 1) for i in range(4)]
    out = {}
    for kind in ("gradient", "update"):
        p = torch.nn.Parameter(torch.zeros(6, 5))
        opt = Adafactor([p], lr=0.1, beta1=0.9, momentum=kind, relative_step=False)
        for g in gs:
            p.grad = g.clone()
            opt.step()
        out[kind] = p.detach()
    assert not torch.allclose(out["gradient"], out["update"], atol=1e-3)


def test_update_rms_is_a_tensor_and_matches_figure1_quantity():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 6))
    opt = Adafactor([p], second_moment="full", beta2=0.9, eps1=0.0)
    for _ in range(3):
        g = torch.randn(5, 6)
        p.grad = g
        opt.step()
    st = opt.state[p]
    assert torch.is_tensor(st["update_rms"]) and st["update_rms"].dim() == 0
    assert st["update_rms"].item() == pytest.approx((g.square() / st["exp_avg_sq"]).mean().sqrt().item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["factored", "row", "col", "full"])
@pytest.mark.parametrize("beta1,momentum", [(0.0, "gradient"), (0.9, "gradient"), (0.9, "update")])
def test_foreach_matches_single_tensor(mode, beta1, momentum):
    results = []
    for foreach in (False, True):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(*s)) for s in [(5, 7), (7,), (2, 3, 4), (6, 2)]]
        opt = Adafactor(ps, lr=0.1, beta1=beta1, momentum=momentum, second_moment=mode, weight_decay=0.01,
                        foreach=foreach)
        for _ in range(5):
            for p in ps:
                p.grad = torch.randn_like(p)
            opt.step()
        results.append([p.detach().clone() for p in ps] + [opt.state[p]["update_rms"] for p in ps])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
def test_bf16_parameters_keep_fp32_state(foreach):
    torch.manual_seed(0)
    x = torch.randn(8, 6)
    grads = [torch.randn(8, 6) for _ in range(3)]
    p16 = torch.nn.Parameter(x.to(torch.bfloat16))
    p32 = torch.nn.Parameter(x.clone())
    o16 = Adafactor([p16], beta1=0.9, foreach=foreach)
    o32 = Adafactor([p32], beta1=0.9, foreach=foreach)
    for g in grads:
        p16.grad, p32.grad = g.to(torch.bfloat16), g.clone()
        o16.step()
        o32.step()
    assert p16.dtype == torch.bfloat16
    for key, v in o16.state[p16].items():
        if torch.is_tensor(v):
            assert v.dtype == torch.float32, key
    torch.testing.assert_close(p16.detach().float(), p32.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["factored", "full"])
def test_state_dict_round_trip_is_bit_identical(dtype, mode):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3)).to(dtype)
    kw = dict(beta1=0.9, second_moment=mode, beta2_exponent=0.8)
    opt = Adafactor(model.parameters(), **kw)
    data = [torch.randn(4, 6, dtype=dtype) for _ in range(10)]

    def step(m, o, x):
        o.zero_grad()
        m(x).float().square().mean().backward()
        o.step()

    for x in data[:5]:
        step(model, opt, x)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    resumed = copy.deepcopy(model)
    resumed.load_state_dict(saved["model"])
    opt2 = Adafactor(resumed.parameters(), **kw)
    opt2.load_state_dict(saved["opt"])
    for p in resumed.parameters():
        for key, v in opt2.state[p].items():
            if torch.is_tensor(v):
                assert v.dtype == torch.float32, key
    for x in data[5:]:
        step(model, opt, x)
        step(resumed, opt2, x)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(beta1=1.0), "beta1"),
        (dict(beta1=-0.1), "beta1"),
        (dict(beta1=1.5), "beta1"),
        (dict(momentum="nesterov"), "momentum"),
        (dict(beta2=0.0), "beta2"),
        (dict(beta2=1.0), "beta2"),
        (dict(beta2_exponent=0.0), "beta2_exponent"),
        (dict(beta2_exponent=-0.8), "beta2_exponent"),
        (dict(second_moment="diag"), "second_moment"),
        (dict(clip_threshold=0.0), "clip_threshold"),
        (dict(clip_threshold=-1.0), "clip_threshold"),
        (dict(relative_step="yes"), "relative_step"),
        (dict(eps1=-1e-30), "eps1"),
        (dict(eps2=-1e-3), "eps2"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(beta1="0.9"), "beta1"),
    ],
)
def test_invalid_arguments_name_the_argument_value_and_allowed(kwargs, name):
    p = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError) as err:
        Adafactor([p], **kwargs)
    msg = str(err.value)
    assert f"{name}=" in msg and repr(next(iter(kwargs.values()))) in msg and "allowed" in msg


def test_invalid_param_group_is_rejected():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="second_moment='rows'"):
        Adafactor([{"params": [p]}, {"params": [q], "second_moment": "rows"}])


def test_works_with_a_torch_lr_scheduler():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Adafactor([p], lr=1.0, relative_step=False, clip_threshold=None, second_moment="full")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    # steps of 1, 0.5, 0.25 with U = 1 each time
    torch.testing.assert_close(p.detach(), torch.full((3,), -1.75))


# --- every path against the reference ------------------------------------------------------------------

# The paths other than the single-tensor reference (``foreach=False``), as constructor arguments.
PATHS = {"C-kernel": dict(fused=True), "foreach": dict(foreach=True), "default": dict()}
PATH_FUNCTIONS = ("_fused_adafactor", "_multi_tensor_adafactor", "_single_tensor_adafactor")


@pytest.fixture
def taken(monkeypatch):
    """Records which path function each step ran on how many tensors: {name: [count per call]}."""
    from factorial.optim import adafactor as A

    calls = {name: [] for name in PATH_FUNCTIONS}
    for name in PATH_FUNCTIONS:
        def wrapped(params, *args, _fn=getattr(A, name), _name=name, **kwargs):
            calls[_name].append(len(params))
            return _fn(params, *args, **kwargs)

        monkeypatch.setattr(A, name, wrapped)
    return calls


KNOBS = [
    dict(beta1=0.0, beta2_exponent=0.8, clip_threshold=1.0, relative_step=True),  # Alg. 6
    dict(beta1=0.9, momentum="gradient", clip_threshold=1.0, relative_step=True, weight_decay=0.01),
    dict(beta1=0.9, momentum="update", clip_threshold=2.0, relative_step=False),
    dict(beta1=0.0, clip_threshold=None, relative_step=False, beta2=0.9),
    dict(beta1=0.0, clip_threshold=0.5, relative_step=True, eps1=0.0),
]
SHAPES = [(9, 7), (7,), (2, 3, 4), (6, 2), (1, 5), (), (37, 5), (2, 35, 3), (9, 7)]


def _run_path(kw, mode, knobs, dtype, steps=6, shapes=SHAPES):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in shapes]
    opt = Adafactor(ps, lr=0.05, second_moment=mode, **kw, **knobs)
    for step in range(steps):
        for p in ps:  # large gradients at the last step so that clipping acts
            p.grad = (torch.randn_like(p, dtype=torch.float32) * (30.0 if step == steps - 1 else 1.0)).to(dtype)
        opt.step()
    return ps, opt


def _assert_same_run(ref_ps, ref, ps, opt, tol):
    for p, q in zip(ref_ps, ps):
        torch.testing.assert_close(q, p, **tol)
        s, t = ref.state[p], opt.state[q]
        assert set(s) == set(t)
        for key in s:
            if torch.is_tensor(s[key]):
                assert t[key].dtype == s[key].dtype == torch.float32 and t[key].shape == s[key].shape, key
                torch.testing.assert_close(t[key], s[key], rtol=1e-5, atol=1e-6)
            else:
                assert t[key] == s[key]


@pytest.mark.parametrize("mode", ["factored", "row", "col", "full"])
@pytest.mark.parametrize("knobs", KNOBS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_matches_reference(mode, knobs, dtype, path, taken):
    """Same parameters, state and update_rms as the single-tensor reference (``foreach=False``), step after
    step, for the C kernel (``fused=True``), the multi-tensor path (``foreach=True``) and the default mix;
    and each tensor really went through the path it names."""
    if path != "foreach":
        require_native(True)
    ref_ps, ref = _run_path(dict(foreach=False), mode, knobs, dtype)
    assert taken["_single_tensor_adafactor"] == [len(SHAPES)] * 6 and not taken["_fused_adafactor"]
    for calls in taken.values():
        calls.clear()
    ps, opt = _run_path(PATHS[path], mode, knobs, dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    _assert_same_run(ref_ps, ref, ps, opt, tol)
    matrices = sum(len(s) >= 2 for s in SHAPES)
    kernel = dtype == torch.float32 and knobs.get("momentum") != "update"
    if path == "foreach":
        assert taken["_multi_tensor_adafactor"] == [len(SHAPES)] * 6 and not taken["_fused_adafactor"]
    else:  # the C kernel takes the float32 matrices it can; vectors go multi-tensor; the rest the reference
        assert taken["_fused_adafactor"] == ([matrices] * 6 if kernel else [])
        assert taken["_multi_tensor_adafactor"] == [len(SHAPES) - matrices] * 6
        assert taken["_single_tensor_adafactor"] == ([] if kernel else [matrices] * 6)
    if knobs["clip_threshold"] and knobs["beta1"] == 0:  # clipping acted at the last step
        assert any(ref.state[p]["update_rms"] > knobs["clip_threshold"] for p in ref_ps)


@pytest.mark.parametrize("mode", ["factored", "row", "col", "full"])
@pytest.mark.parametrize("knobs", [KNOBS[0], KNOBS[1], KNOBS[2]], ids=["alg6", "gradient-momentum", "update-momentum"])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_resumes_the_references_state_dict_and_back(mode, knobs, path):
    """All paths keep one state format: a state dict saved on any path resumes on any other, and the
    two runs stay equal (the reference saved, ``path`` resumed; and ``path`` saved, the reference resumed)."""
    if path != "foreach":
        require_native(True)
    torch.manual_seed(0)
    shapes = [(6, 5), (5,), (2, 3, 4)]
    x = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]
    kw = dict(second_moment=mode, **knobs)
    a = [torch.nn.Parameter(t.clone()) for t in x]
    b = [torch.nn.Parameter(t.clone()) for t in x]
    ref, other = Adafactor(a, foreach=False, **kw), Adafactor(b, **PATHS[path], **kw)
    for gs in grads[:3]:
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        other.step()
    saved_ref, saved_other = io.BytesIO(), io.BytesIO()
    torch.save(ref.state_dict(), saved_ref)
    torch.save(other.state_dict(), saved_other)
    saved_ref.seek(0)
    saved_other.seek(0)
    ref2, other2 = Adafactor(a, **PATHS[path], **kw), Adafactor(b, foreach=False, **kw)
    ref2.load_state_dict(torch.load(saved_ref))
    other2.load_state_dict(torch.load(saved_other))
    for p in a + b:
        opt = ref2 if p in set(a) else other2
        assert all(v.dtype == torch.float32 for v in opt.state[p].values() if torch.is_tensor(v))
    for gs in grads[3:]:
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        ref2.step()
        other2.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        for key, v in ref2.state[p].items():
            if torch.is_tensor(v):
                torch.testing.assert_close(other2.state[q][key], v, rtol=1e-5, atol=1e-6)


def test_the_default_takes_the_c_kernel_on_cpu_and_foreach_false_is_the_reference(taken):
    """Which path each tensor takes, from the constructor's ``foreach`` and ``fused``."""
    require_native(True)
    cases = {  # kwargs -> (C kernel, multi-tensor, single-tensor) tensors of a matrix and a vector
        (): (1, 1, 0),
        (("fused", True),): (1, 1, 0),
        (("fused", True), ("foreach", False)): (1, 0, 1),
        (("fused", False),): (0, 1, 1),
        (("foreach", False),): (0, 0, 2),
        (("foreach", True),): (0, 2, 0),
        (("fused", False), ("foreach", True)): (0, 2, 0),
    }
    for kw, expected in cases.items():
        ps = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
        for p in ps:
            p.grad = torch.randn_like(p)
        for calls in taken.values():
            calls.clear()
        Adafactor(ps, **dict(kw)).step()
        assert tuple(sum(taken[name]) for name in PATH_FUNCTIONS) == expected, kw


@pytest.mark.parametrize("kw", [dict(fused=True), dict(foreach=False), dict(foreach=True)])
def test_step_never_reads_a_tensor_on_the_host(kw, monkeypatch):
    """No .item() (or float()/bool() of a tensor) inside step(): on a GPU each would be a sync."""
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = Adafactor(ps, beta1=0.9, **kw)

    def forbidden(self, *args):
        raise AssertionError("host read of a tensor inside step()")

    for p in ps:
        p.grad = torch.randn_like(p)
    with monkeypatch.context() as m:
        for name in ("item", "__float__", "__bool__", "tolist"):
            m.setattr(torch.Tensor, name, forbidden)
        opt.step()
        opt.step()


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(foreach="yes"), r"foreach='yes'; allowed: None, True or False"),
        (dict(fused=1.0), r"fused=1\.0; allowed: None, True or False"),
        (dict(fused=True, foreach=True), r"fused=True; allowed: fused=True only with foreach=None or False"),
        (dict(compile="yes"), r"compile='yes'; allowed: False \(the eager paths\) or True \(the whole step in one"),
        (dict(compile=None), r"compile=None; allowed: False"),
        (dict(compile=True, fused=True), r"fused=True; allowed: None or False with compile=True"),
        (dict(compile=True, foreach=True), r"foreach=True; allowed: None with compile=True"),
        (dict(compile=True, foreach=False), r"foreach=False; allowed: None with compile=True"),
        (dict(compile=True, cuda_graphs="no"), r"cuda_graphs='no'; allowed: True or False"),
    ],
)
def test_incompatible_implementation_flags_are_refused_by_name(kw, expected, monkeypatch, fresh_kernel):
    """foreach / fused / compile are checked together, by the optimizer and (prefixed) by the config, before any
    work: no parameter changes, no kernel is built."""
    from factorial.optim import validate_paths

    monkeypatch.setattr(native_kernel, "_load", lambda: pytest.fail("the kernel was looked up"))
    p = torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match=expected):
        Adafactor([p], **kw)
    assert torch.equal(p, torch.zeros(2, 2))
    args = dict(foreach=None, fused=None, compile=False) | kw
    with pytest.raises(ValueError, match="optim." + expected):
        validate_paths(**args, prefix="optim.")
    validate_paths(foreach=False, fused=True)
    validate_paths(foreach=None, fused=False, compile=True, cuda_graphs=False)


def test_the_removed_native_flag_is_gone_and_a_group_cannot_leave_the_compiled_path():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="invalid native=None; allowed: a knob of Adafactor"):
        Adafactor([p], native=None)
    with pytest.raises(ValueError, match=r"foreach=True; allowed: None with compile=True"):
        Adafactor([{"params": [p], "foreach": True}], compile=True)


@pytest.mark.parametrize("kw", [dict(fused=True), dict(foreach=False), dict(foreach=True)])
def test_update_rms_and_relative_scale_are_accurate_on_a_large_matrix(kw):
    """RMS(U) and RMS(X) stay at float32 rounding on millions of entries, on every path.

    A single float32 reduction over a whole 8192×512 tensor (``vector_norm`` or ``_foreach_norm``
    on CPU) is off by ~1e-4 relative; the clipping denominator and ρ·RMS(X) must not carry that.
    """
    torch.manual_seed(0)
    x = torch.randn(8192, 512) * 3 + 1
    g = torch.randn(8192, 512) * 2 + 0.5
    p = torch.nn.Parameter(x.clone())
    p.grad = g.clone()
    opt = Adafactor([p], lr=1e-2, second_moment="full", relative_step=True, clip_threshold=None,
                    eps1=0.0, eps2=0.0, **kw)
    opt.step()
    # step 1, full mode, eps1 = 0: V̂ = G², U = G/|G| = sign(G), RMS(U) = 1 exactly in float64.
    assert abs(float(opt.state[p]["update_rms"]) - 1.0) < 1e-6
    rms_x = x.double().pow(2).mean().sqrt()
    # Each element's step is ρ·RMS(X); read back through float32 parameters it carries their
    # rounding (~1e-5 relative each), which the mean over 4M elements averages away.
    step = ((x.double() - p.detach().double()) / g.double().sign()).mean()
    assert abs(float(step) / (1e-2 * float(rms_x)) - 1.0) < 1e-6


@pytest.mark.parametrize("mode", ["factored", "row", "col"])
@pytest.mark.parametrize("kw", [dict(fused=True), dict(foreach=True), dict(foreach=False)])
def test_factored_statistics_and_update_rms_are_accurate_on_a_large_matrix(mode, kw):
    """R, C and RMS(U) of an 8192×512 gradient against float64: C kernel, multi-tensor path, reference."""
    require_native(kw.get("fused"))
    torch.manual_seed(0)
    g = torch.randn(8192, 512) * (torch.rand(8192, 1) + 0.1) * (torch.rand(512) + 0.1)
    p = torch.nn.Parameter(torch.randn(8192, 512))
    p.grad = g.clone()
    opt = Adafactor([p], lr=1e-2, second_moment=mode, relative_step=False, clip_threshold=1.0, eps1=0.0, **kw)
    opt.step()
    g2 = g.double().square()
    row, col = g2.mean(-1), g2.mean(-2)
    vhat = {"factored": row[:, None] * col[None, :] / row.mean(), "row": row[:, None].expand_as(g2),
            "col": col[None, :].expand_as(g2)}[mode]
    rms_u = (g2 / vhat).mean().sqrt()
    state = opt.state[p]
    if mode != "col":
        torch.testing.assert_close(state["exp_avg_sq_row"].double(), row, rtol=2e-6, atol=0)
    if mode != "row":
        torch.testing.assert_close(state["exp_avg_sq_col"].double(), col, rtol=2e-6, atol=0)
    assert abs(float(state["update_rms"]) / float(rms_u) - 1.0) < 2e-6


# --- the C kernel of the fused path ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["factored", "col", "full"])
@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_c_kernel_gives_the_same_step_with_one_or_two_threads(mode, beta1):
    require_native(True)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            p = torch.nn.Parameter(torch.randn(300, 40))
            opt = Adafactor([p], beta2_exponent=0.8, second_moment=mode, beta1=beta1, fused=True)
            for _ in range(3):
                p.grad = torch.randn(300, 40)
                opt.step()
            results.append((p.detach().clone(), opt.state[p]["exp_avg_sq" if mode == "full" else "exp_avg_sq_col"].clone()))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=0)


def test_c_kernel_leaves_earlier_update_rms_tensors_alone():
    """Each step's RMS(U) is a new tensor: a caller that keeps them (to read later, without a sync) keeps
    the values of their steps."""
    require_native(True)
    p = torch.nn.Parameter(torch.randn(20, 30))
    opt = Adafactor([p], fused=True)
    kept = []
    for scale in (1.0, 100.0):
        p.grad = torch.randn(20, 30) * torch.rand(20, 1) * scale
        opt.step()
        kept.append(opt.state[p]["update_rms"])
    assert kept[0] is not kept[1] and float(kept[0]) != float(kept[1])


def test_tensors_the_c_kernel_cannot_take_run_the_reference_path():
    """A non-contiguous gradient (or any non-float32 tensor) goes through the reference path: same result."""
    require_native(True)
    torch.manual_seed(0)
    x, g = torch.randn(12, 9), torch.randn(9, 12).t()
    assert not g.is_contiguous()
    out = []
    for kw in (dict(fused=True), dict(fused=False)):
        p = torch.nn.Parameter(x.clone())
        p.grad = g if kw["fused"] else g.contiguous()
        assert native_kernel.supports(p, p.grad) is (not kw["fused"])
        Adafactor([p], **kw).step()
        out.append(p.detach())
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_without_a_compiler_the_default_path_warns_once_and_runs_the_reference(tmp_path, monkeypatch, fresh_kernel):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("FACTORIAL_KERNEL_CACHE", str(tmp_path / "cache"))
    p = torch.nn.Parameter(torch.randn(6, 5))
    p.grad = torch.randn(6, 5)
    r = torch.nn.Parameter(p.detach().clone())
    r.grad = p.grad.clone()
    reference = Adafactor([r], foreach=False)
    with pytest.warns(RuntimeWarning, match="no-such-cc"):
        opt = Adafactor([p])
        opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    q.grad = p.grad.clone()
    opt.step()  # no second warning: the answer is kept for the process
    reference.step()
    reference.step()
    torch.testing.assert_close(p, r, rtol=0, atol=0)  # the reference path itself ran
    with pytest.raises(RuntimeError, match="fused=True but the C kernel is unavailable: no C compiler"):
        Adafactor([q], fused=True)
    assert not (tmp_path / "cache").exists()


def test_the_kernel_is_built_once_into_the_cache_and_reused(tmp_path, monkeypatch, fresh_kernel):
    require_native(True)
    monkeypatch.setenv("FACTORIAL_KERNEL_CACHE", str(tmp_path))
    native_kernel.reset()
    assert native_kernel.kernel() is not None
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left behind
    mtime = built[0].stat().st_mtime_ns
    native_kernel.reset()
    assert native_kernel.kernel() is not None
    assert [f.stat().st_mtime_ns for f in tmp_path.iterdir()] == [mtime]


def test_factorial_native_0_turns_the_kernel_off(monkeypatch, fresh_kernel):
    monkeypatch.setenv("FACTORIAL_NATIVE", "0")
    assert native_kernel.kernel() is None and native_kernel.why_unavailable() == "FACTORIAL_NATIVE=0"


def test_c_kernel_status_says_which_implementation_the_cpu_matrices_take(monkeypatch, fresh_kernel):
    w = torch.nn.Parameter(torch.randn(8, 4))
    assert Adafactor([w], fused=False).c_kernel_status() == "off"
    assert Adafactor([w], foreach=True).c_kernel_status() == "off"  # the multi-tensor path
    assert Adafactor([w], foreach=False).c_kernel_status() == "off"  # the reference path
    # One group on the fused path is enough.
    v = torch.nn.Parameter(torch.randn(3))
    mixed = Adafactor([{"params": [v], "foreach": True}, {"params": [w]}])
    assert mixed.c_kernel_status() == native_kernel.status()
    monkeypatch.setenv("FACTORIAL_NATIVE", "0")
    native_kernel.reset()
    assert Adafactor([w]).c_kernel_status() == "unavailable: FACTORIAL_NATIVE=0"


def test_cold_build_seconds_compiles_into_a_temporary_directory_and_leaves_the_cache_alone(monkeypatch, tmp_path):
    require_native(True)
    monkeypatch.setenv("FACTORIAL_KERNEL_CACHE", str(tmp_path / "cache"))
    seconds = native_kernel.cold_build_seconds()
    assert seconds is not None and seconds > 0
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("CC", "no-such-compiler-factorial")
    assert native_kernel.cold_build_seconds() is None


def test_the_optimizer_never_imports_dynamo():
    """torch wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict in a lazy
    torch._dynamo.disable whose first call imports torch._dynamo (a large part of a cell's start-up);
    Adafactor calls the plain methods. Checked in a fresh interpreter, through a save and a load."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from factorial.optim import Adafactor\n"
        "m = torch.nn.Linear(8, 4)\n"
        "opt = Adafactor(m.parameters(), lr=0.01, beta1=0.9)\n"
        "opt.add_param_group({'params': [torch.nn.Parameter(torch.ones(3))]})\n"
        "m(torch.randn(2, 8)).sum().backward(); opt.step(); opt.zero_grad()\n"
        "sd = opt.state_dict()\n"
        "again = Adafactor(list(m.parameters()), lr=0.01, beta1=0.9)\n"
        "again.add_param_group({'params': [torch.nn.Parameter(torch.ones(3))]})\n"
        "again.load_state_dict(sd)\n"
        "assert again.state_dict()['state'].keys() == sd['state'].keys()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"], proc.stdout + proc.stderr[-2000:]


def test_a_group_added_later_is_checked_like_the_defaults():
    """add_param_group checks the new group's own values, names the bad one, and leaves the optimizer as it was."""
    opt = Adafactor([torch.nn.Parameter(torch.ones(2, 2))])
    with pytest.raises(ValueError, match=r"beta2.*2\.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], "beta2": 2.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], "beta2": 0.99})
    assert [g["beta2"] for g in opt.param_groups] == [0.999, 0.99]


def test_the_knob_spec_is_the_one_list_of_knobs():
    """factorial.optim.knobs lists every knob once: the optimizer's defaults (Alg. 6), the config schema's
    optim.* fields and their KEYS, the trainer, the benchmark's Alg. 6 and Table 2's rows all come from it."""
    import dataclasses

    from factorial import bench, schema
    from factorial.optim import knobs as K
    from factorial.rows import TABLE2

    opt = Adafactor([torch.nn.Parameter(torch.zeros(3, 2))])
    assert {k: opt.defaults[k] for k in K.NAMES} == K.DEFAULTS
    assert K.DEFAULTS == dict(beta1=0.0, momentum="gradient", beta2=0.999, beta2_exponent=0.8, second_moment="factored",
                              clip_threshold=1.0, relative_step=True, eps1=1e-30, eps2=1e-3, weight_decay=0.0)  # Alg. 6
    fields = {f.name: f.default for f in dataclasses.fields(schema.OptimSchema)}
    assert {k: fields[k] for k in K.NAMES} == K.DEFAULTS
    assert all(schema.KEYS[f"optim.{k.name}"].optimizers == k.optimizers for k in K.KNOBS)
    assert bench.ALG6 == {"lr": 1e-2, **K.DEFAULTS}
    for row in TABLE2.values():
        assert set(row.optim) <= {"name", "lr_scale", *K.NAMES}, row.letter
        K.check({k: v for k, v in row.optim.items() if k in K.NAMES})  # every row's setting is allowed
    with pytest.raises(ValueError, match=r"invalid beta3=0\.5; allowed: a knob of Adafactor: beta1, momentum"):
        Adafactor([torch.nn.Parameter(torch.zeros(2))], beta3=0.5)
    with pytest.raises(ValueError, match=r"invalid optim\.beta1=1\.0; allowed: 0 <= beta1 < 1"):
        K.check({"beta1": 1.0}, prefix="optim.")
