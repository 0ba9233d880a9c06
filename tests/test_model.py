"""Tests for factorial.model: shapes, causality, embedding sharing/scaling, validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from factorial.model import (
    PRESETS,
    ModelConfig,
    Transformer,
    check_context,
    num_parameters,
    sinusoidal_positions,
    validate_model_config,
)

VOCAB = 97


def tiny(**overrides) -> ModelConfig:
    return dataclasses.replace(PRESETS["tiny"], **{"vocab_size": VOCAB, **overrides})


def make(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny(**overrides)).eval()


def tokens(B: int = 3, T: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T), generator=g)


# ----------------------------------------------------------------------------- shapes, loss


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("tie", [True, False])
def test_shapes_and_initial_loss_near_log_vocab(norm, tie):
    model = make(norm=norm, tie_embeddings=tie)
    idx = tokens()
    logits, loss = model(idx, targets=tokens(seed=2))
    assert logits.shape == (3, 16, VOCAB)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert abs(loss.item() - math.log(VOCAB)) < 1.0


def test_no_targets_gives_no_loss():
    logits, loss = make()(tokens())
    assert loss is None and logits.shape == (3, 16, VOCAB)


def test_initial_loss_default_vocab_tiny_preset():
    torch.manual_seed(0)
    model = Transformer(PRESETS["tiny"])
    V = PRESETS["tiny"].vocab_size
    idx = torch.randint(0, V, (4, 32))
    _, loss = model(idx, targets=torch.randint(0, V, (4, 32)))
    assert abs(loss.item() - math.log(V)) < 1.0


def test_full_context_accepted_and_longer_rejected():
    model = make()
    T = model.config.context_length
    model(tokens(T=T))
    with pytest.raises(ValueError, match=r"model\.context_length"):
        model(tokens(T=T + 1))
    with pytest.raises(ValueError, match=r"model\.context_length"):
        check_context(T + 1, model.config)
    check_context(T, model.config)


def test_bf16_autocast_loss_is_float32():
    model = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(tokens(), targets=tokens(seed=2))
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_causal(norm):
    model = make(norm=norm)
    idx = tokens(B=1, T=20)
    base, _ = model(idx)
    for j in (0, 7, 19):
        changed = idx.clone()
        changed[0, j] = (changed[0, j] + 1) % VOCAB
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, j], base[:, j])


# ----------------------------------------------------------------------------- tied embeddings


def test_tied_uses_token_embedding_and_counts_it_once():
    tied = make(tie_embeddings=True)
    untied = make(tie_embeddings=False)
    names = dict(tied.named_parameters())
    assert tied.lm_head is None and not any(n.startswith("lm_head") for n in names)
    assert "lm_head.weight" in dict(untied.named_parameters())

    d = tied.config.d_model
    assert num_parameters(untied) - num_parameters(tied) == VOCAB * d
    assert num_parameters(tied) == sum(p.numel() for p in tied.parameters())

    # The logits are exactly the final hidden state times the embedding, unscaled.
    hidden = {}
    tied.ln_f.register_forward_hook(lambda m, i, o: hidden.setdefault("x", o))
    logits, _ = tied(tokens())
    torch.testing.assert_close(logits, hidden["x"] @ tied.tok_emb.weight.t())

    # And gradients from the output side reach the embedding rows of tokens never input.
    idx = torch.zeros(2, 8, dtype=torch.long)
    _, loss = tied(idx, targets=torch.full_like(idx, 5))
    loss.backward()
    assert tied.tok_emb.weight.grad[5].abs().sum() > 0


def test_untied_lm_head_init():
    model = make(tie_embeddings=False, vocab_size=4096)
    d = model.config.d_model
    assert model.lm_head.weight.shape == (4096, d)
    assert model.lm_head.weight.std().item() == pytest.approx(d**-0.5, rel=0.05)


def test_post_norm_has_no_final_layernorm():
    assert make(norm="post").ln_f is None
    assert isinstance(make(norm="pre").ln_f, torch.nn.LayerNorm)


# ----------------------------------------------------------------------------- init and scaling


@pytest.mark.parametrize("std", [None, 1.0, 0.3])
def test_embedding_init_std(std):
    model = make(embedding_init_std=std, vocab_size=4096)
    expected = std if std is not None else model.config.d_model**-0.5
    assert model.tok_emb.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_linear_init_is_variance_scaling_and_layernorm_is_identity():
    model = make(bias=True)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert m.weight.std().item() == pytest.approx(m.in_features**-0.5, rel=0.15), name
            assert torch.all(m.bias == 0), name
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name


def test_no_biases_by_default():
    names = [n for n, _ in make().named_parameters()]
    assert not any(n.endswith("bias") and (".attn." in n or ".mlp." in n) for n in names)


def _block_input(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    captured = {}
    handle = model.blocks[0].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    model(idx)
    handle.remove()
    return captured["x"]


def test_embedding_multiplier_scales_block_input():
    d = PRESETS["tiny"].d_model
    idx = tokens(B=2, T=10)
    pos = sinusoidal_positions(32, d)[:10]
    one = make(embedding_multiplier=1.0)
    default = make(embedding_multiplier=None)  # same seed -> same embedding
    torch.testing.assert_close(one.tok_emb.weight, default.tok_emb.weight)
    x1 = _block_input(one, idx) - pos
    xd = _block_input(default, idx) - pos
    torch.testing.assert_close(x1, one.tok_emb.weight[idx])
    torch.testing.assert_close(xd, x1 * math.sqrt(d))


def test_sinusoidal_positions():
    pe = sinusoidal_positions(50, 32)
    assert pe.shape == (50, 32) and pe.dtype == torch.float32
    torch.testing.assert_close(pe[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    assert pe.abs().max() <= 1.0
    assert sinusoidal_positions(4, 7).shape == (4, 7)  # odd widths are padded
    # Fixed, not learned: no positional parameter anywhere.
    model = make()
    assert "pos_enc" not in dict(model.named_parameters())
    assert "pos_enc" not in model.state_dict()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field,value",
    [
        ("vocab_size", 0),
        ("d_model", -4),
        ("n_layers", 0),
        ("n_heads", 0),
        ("n_heads", 3),  # does not divide d_model=32
        ("d_ff", 0),
        ("context_length", 0),
        ("d_model", 32.0),
        ("n_layers", True),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("norm", "sandwich"),
        ("embedding_init_std", 0.0),
        ("embedding_init_std", -1.0),
        ("embedding_multiplier", 0.0),
        ("embedding_multiplier", float("nan")),
        ("tie_embeddings", "yes"),
    ],
)
def test_validate_rejects(field, value):
    cfg = tiny(**{field: value})
    with pytest.raises(ValueError, match=rf"model\.{field}") as info:
        validate_model_config(cfg)
    assert repr(value) in str(info.value) or str(value) in str(info.value)
    with pytest.raises(ValueError, match=rf"model\.{field}"):
        Transformer(cfg)


def test_validate_accepts_presets_and_extremes():
    for cfg in PRESETS.values():
        validate_model_config(cfg)
    validate_model_config(tiny(dropout=0.0, embedding_init_std=1.0, embedding_multiplier=1.0, norm="post"))


def test_presets_shapes():
    assert (PRESETS["tiny"].d_model, PRESETS["tiny"].n_layers, PRESETS["tiny"].n_heads) == (32, 1, 2)
    assert (PRESETS["cpu"].d_model, PRESETS["cpu"].d_ff, PRESETS["cpu"].context_length) == (128, 512, 64)
    base = PRESETS["base"]
    assert (base.d_model, base.n_layers, base.n_heads, base.d_ff, base.context_length) == (512, 6, 8, 2048, 256)
    assert all(cfg.vocab_size == ModelConfig().vocab_size for cfg in PRESETS.values())


# ----------------------------------------------------------------------------- training, determinism


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_adam_learns_repeating_sequence(norm):
    torch.manual_seed(0)
    model = Transformer(tiny(norm=norm)).train()
    seq = torch.arange(8).repeat(5)[None, :33]  # 0..7 0..7 ...
    idx, targets = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _, first = model(idx, targets)
    for _ in range(40):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first.item()


def test_dropout_is_active_only_in_training():
    model = make(dropout=0.5)
    idx = tokens()
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_deterministic_init_and_logits():
    a, b = make(seed=123), make(seed=123)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    idx = tokens()
    assert torch.equal(a(idx)[0], b(idx)[0])
    c = make(seed=124)
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_figure1_matrices():
    for tie in (True, False):
        model = make(tie_embeddings=tie)
        mats = model.figure1_matrices()
        assert set(mats) == {"tok_emb", "attn_proj.0", "ff1.0"}
        params = {id(p) for p in model.parameters()}
        for name, p in mats.items():
            assert isinstance(p, torch.nn.Parameter) and p.dim() == 2, name
            assert id(p) in params, name
        d = model.config.d_model
        assert mats["tok_emb"].shape == (VOCAB, d)
        assert mats["attn_proj.0"].shape == (d, d)
        assert mats["ff1.0"].shape == (model.config.d_ff, d)


def test_num_parameters_presets_formula():
    # Count = embedding + per layer (qkv + proj + fc1 + fc2 + 2 LayerNorms) + final LN.
    for name in ("tiny", "cpu"):
        cfg = PRESETS[name]
        d, f, L, V = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
        per_layer = 3 * d * d + d * d + 2 * d * f + 2 * 2 * d
        torch.manual_seed(0)
        assert num_parameters(Transformer(cfg)) == V * d + L * per_layer + 2 * d


def test_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break; aot_eager checks tracing without a C++ toolchain.
    model = make()
    idx, targets = tokens(), tokens(seed=2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    _, loss = compiled(idx, targets)
    torch.testing.assert_close(loss, model(idx, targets)[1])
    loss.backward()
    assert model.tok_emb.weight.grad is not None
