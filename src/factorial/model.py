"""A small decoder-only Transformer language model.

Written to reproduce the ablations of Shazeer & Stern (2018), "Adafactor:
Adaptive Learning Rates with Sublinear Memory Cost". The paper trains the
Tensor2Tensor "Transformer base" on language modelling, and several of its
results (Table 3) hinge on how the token embedding -- which is shared with the
softmax -- is initialised and scaled. So the embedding is the one place where
this model is configurable beyond the usual sizes; everything else follows the
T2T base model: fixed sinusoidal positions, ReLU feed-forward, no biases.

Shapes: B = batch, T = sequence length, C = d_model, V = vocab_size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .schema import NORMS, PRESETS, ModelConfig, validate_model_config  # noqa: F401 (defined without torch)

__all__ = [
    "ModelConfig",
    "PRESETS",
    "Transformer",
    "check_context",
    "num_parameters",
    "sinusoidal_positions",
    "validate_model_config",
]


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def check_context(T: int, cfg: ModelConfig) -> None:
    """Positions beyond context_length have no positional encoding; refuse them loudly."""
    if T > cfg.context_length:
        raise ValueError(
            f"sequence length {T} exceeds model.context_length={cfg.context_length}: "
            f"inputs must have at most {cfg.context_length} tokens"
        )


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """Fixed positional encodings, (length, d_model), as in Tensor2Tensor.

    This is T2T's ``get_timing_signal_1d``: geometric timescales from 1 to 1e4,
    with all sines in the first half of the channels and all cosines in the
    second (Vaswani et al. interleave them; the two differ only by a fixed
    permutation of channels, which the first layer absorbs). Fixed rather than
    learned so that the token embedding is the only embedding matrix, which
    keeps the Table 3 ablation about that one matrix.
    """
    n_timescales = d_model // 2
    log_increment = math.log(1.0e4) / max(n_timescales - 1, 1)
    inv_timescales = torch.exp(torch.arange(n_timescales, dtype=torch.float64) * -log_increment)
    scaled_time = torch.arange(length, dtype=torch.float64)[:, None] * inv_timescales[None, :]
    signal = torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)
    signal = F.pad(signal, (0, d_model % 2))  # odd d_model: one silent channel, as in T2T
    return signal.to(torch.float32)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        # One fused (3C, C) matrix: fewer kernel launches, same math as separate q/k/v.
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_size)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU, as in the Transformer base the paper trains.
        return self.drop(self.fc2(F.relu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            # x + f(LN(x)): the residual stream is never normalised, so a final LN is needed.
            x = x + self.attn(self.ln1(x))
            x = x + self.mlp(self.ln2(x))
        else:
            # LN(x + f(x)): the original 2017 placement; each block's output is already normalised.
            x = self.ln1(x + self.attn(x))
            x = self.ln2(x + self.mlp(x))
        return x


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_model_config(cfg)
        self.config = cfg
        self.embedding_multiplier = cfg.resolved_embedding_multiplier

        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # A buffer, not a parameter: nothing for the optimizer to see. Not saved in
        # checkpoints either, since it is a pure function of the config.
        self.register_buffer(
            "pos_enc", sinusoidal_positions(cfg.context_length, cfg.d_model), persistent=False
        )
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # Post-LN blocks end in a LayerNorm already; a second one would be redundant.
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else None
        self.lm_head = (
            None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T2T-style variance scaling: every Linear weight ~ N(0, 1/fan_in).

        That keeps activations at unit scale through each matrix, so the
        optimizer under study, not the init, decides how the scales evolve.
        The untied lm_head falls under the same rule (fan_in = d_model).
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.config.resolved_embedding_init_std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V), and mean cross-entropy if targets given."""
        B, T = idx.shape
        check_context(T, self.config)

        # The multiplier applies to the embedding lookup only, not to the softmax
        # weights it shares: with the default init (std 1/sqrt(d)) times sqrt(d),
        # the inputs have unit scale while the logits stay small at init.
        x = self.tok_emb(idx) * self.embedding_multiplier
        x = self.emb_drop(x + self.pos_enc[:T])
        for block in self.blocks:
            x = block(x)
        if self.ln_f is not None:
            x = self.ln_f(x)

        if self.lm_head is None:
            logits = x @ self.tok_emb.weight.t()  # tied: no rescaling of the logits
        else:
            logits = self.lm_head(x)

        loss = None
        if targets is not None:
            # float32 even under bf16 autocast: log-softmax over V classes in bf16 is lossy.
            loss = F.cross_entropy(logits.float().reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss

    def figure1_matrices(self) -> dict[str, nn.Parameter]:
        """Three representative 2-D weights to track during training (diagnostics/plots).

        The token embedding (shared with the softmax when tied), and from the first
        block the attention output projection and the first feed-forward matrix.
        """
        first = self.blocks[0]
        return {
            "tok_emb": self.tok_emb.weight,
            "attn_proj.0": first.attn.proj.weight,
            "ff1.0": first.mlp.fc1.weight,
        }


def num_parameters(model: nn.Module) -> int:
    """Trainable-or-not parameter count, each shared tensor counted once."""
    # model.parameters() already deduplicates shared Parameters, but be explicit
    # about it, since the tied embedding is exactly what this count is for.
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# Dense bf16 peak of a GPU (TFLOP/s, without sparsity), by a part of its name: the denominator of MFU.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token: 6·N (N with the tied softmax matrix counted once) + 6·L·T·d for the causal
    attention scores and values (forward and backward)."""
    with torch.device("meta"):
        n = num_parameters(Transformer(cfg))
    return 6.0 * n + 6.0 * cfg.n_layers * cfg.context_length * cfg.d_model


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (None for a GPU not in PEAK_BF16_TFLOPS, or a CPU)."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)
