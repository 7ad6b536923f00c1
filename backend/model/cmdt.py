"""cMDT: a conditional motion diffusion transformer over windows of facial motion.

One readable file, after DiT: embedders, the block, the region heads, the model, size presets.

Tokens are frames (25 fps). Each token sees
  - the noisy motion x_t, plus the motion already known for the first frames of the window
    (the tail of the previous window) and a flag saying which frames those are;
  - the speech features of its frame, through a small convolution spanning ±4 frames, added
    to the hidden state before every block (audio "attended within a local window");
  - the diffusion step and the speaker's identity through adaptive layer norm (adaLN-Zero).
Lips/jaw, upper face and head pose have their own output heads. Audio and identity can be
dropped (replaced by learned null embeddings) for classifier-free guidance.
"""

import math

import torch
from torch import nn

from .config import CMDTConfig

#################################################################################
#                               Embedders                                       #
#################################################################################

class TimestepEmbedder(nn.Module):
    """Diffusion step -> (B, width): sinusoidal features through an MLP."""

    def __init__(self, width: int, frequencies: int = 128):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        scale = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * scale[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


class AudioEncoder(nn.Module):
    """Speech features (B, L, F) -> (B, L, width), each frame seeing ±4 neighbours."""

    def __init__(self, audio_dim: int, width: int):
        super().__init__()
        self.project = nn.Linear(audio_dim, width)
        self.convs = nn.Sequential(
            nn.Conv1d(width, width, 5, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, padding=2), nn.GELU())
        self.null = nn.Parameter(torch.zeros(width))  # "no audio", for guidance

    def forward(self, audio: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        h = self.project(audio)                                  # (B, L, W)
        h = h + self.convs(h.transpose(1, 2)).transpose(1, 2)
        return torch.where(drop[:, None, None], self.null.expand_as(h), h)


class IdentityEmbedder(nn.Module):
    """Identity coefficients (B, I) -> (B, width), or a learned null when dropped."""

    def __init__(self, identity_dim: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(identity_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.null = nn.Parameter(torch.zeros(width))

    def forward(self, identity: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        h = self.mlp(identity)
        return torch.where(drop[:, None], self.null.expand_as(h), h)


#################################################################################
#                                 Core block                                    #
#################################################################################

def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class CMDTBlock(nn.Module):
    """Self-attention over the window's frames and an MLP, both under adaLN-Zero."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.drop(self._attend(h, padding))
        x = x + gate2[:, None] * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))
        return x

    def _attend(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """nn.MultiheadAttention's arithmetic on its own weights, written out so every shape
        stays symbolic (the ONNX export then takes any window length)."""
        a = self.attention
        batch, width = h.shape[0], h.shape[2]
        q, k, v = nn.functional.linear(h, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(batch, -1, a.num_heads, a.head_dim).transpose(1, 2) for z in (q, k, v))
        mask = None if padding is None else ~padding[:, None, None, :]   # True = may attend
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return a.out_proj(out.transpose(1, 2).reshape(batch, -1, width))


class RegionHeads(nn.Module):
    """Final adaLN, then one linear head per region (lower face, upper face, head pose)."""

    def __init__(self, width: int, region_dims: tuple[int, ...]):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.heads = nn.ModuleList(nn.Linear(width, d) for d in region_dims)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln(c).chunk(2, dim=-1)
        h = modulate(self.norm(x), shift, scale)
        return torch.cat([head(h) for head in self.heads], dim=-1)


#################################################################################
#                                   Model                                       #
#################################################################################

class CMDT(nn.Module):
    """x0-predicting denoiser of a motion window."""

    def __init__(self, config: CMDTConfig):
        super().__init__()
        self.config = config
        c = config
        # noisy motion, known context motion, context flag
        self.motion_in = nn.Linear(2 * c.motion_dim + 1, c.width)
        self.position = nn.Parameter(torch.zeros(1, c.window, c.width))
        self.audio = AudioEncoder(c.audio_dim, c.width)
        self.identity = IdentityEmbedder(c.identity_dim, c.width)
        self.timestep = TimestepEmbedder(c.width)
        self.blocks = nn.ModuleList(CMDTBlock(c.width, c.heads, c.dropout) for _ in range(c.depth))
        self.out = RegionHeads(c.width, c.region_dims)
        self._initialise()

    def _initialise(self) -> None:
        def xavier(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(xavier)
        nn.init.normal_(self.position, std=0.02)
        # adaLN-Zero: every block starts as the identity, the heads output zero; training
        # opens them up gradually, which keeps early steps stable (DiT, section 3.2).
        for block in self.blocks:
            nn.init.zeros_(block.adaln[-1].weight)
            nn.init.zeros_(block.adaln[-1].bias)
        nn.init.zeros_(self.out.adaln[-1].weight)
        nn.init.zeros_(self.out.adaln[-1].bias)
        for head in self.out.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                identity: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                drop_audio: torch.Tensor, drop_identity: torch.Tensor,
                valid: torch.Tensor | None = None, audio_h: torch.Tensor | None = None
                ) -> torch.Tensor:
        """
        x_t (B, L, D) noisy motion; t (B,) diffusion step; audio (B, L, F);
        identity (B, I); context (B, L, D) known motion (zeros elsewhere);
        context_mask (B, L) 1 where context is known; drop_* (B,) bool;
        valid (B, L) bool, False on padding frames of short clips (None: all valid);
        audio_h (B, L, W): `self.audio(audio, drop_audio)` when the caller has it already (a
        sampler's audio is the same at every step).
        Returns the x0 estimate (B, L, D). L may be shorter than config.window.
        """
        length = x_t.shape[1]
        mask = context_mask[..., None].to(x_t.dtype)
        h = self.motion_in(torch.cat([x_t, context * mask, mask], dim=-1))       # (B, L, W)
        h = h + self.position[:, :length]
        if audio_h is None:
            audio_h = self.audio(audio, drop_audio)                            # (B, L, W)
        c = self.timestep(t) + self.identity(identity, drop_identity)          # (B, W)
        padding = None if valid is None else ~valid
        for block in self.blocks:
            h = block(h + audio_h, c, padding)
        return self.out(h, c)                                                  # (B, L, D)


class SamplingDenoiser(nn.Module):
    """The forward pass a sampler needs: audio already encoded (`CMDT.audio`), nothing dropped
    but identity. The torch runtime calls it; the ONNX export is made from it."""

    def __init__(self, model: CMDT):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, identity, context, context_mask, drop_identity, audio_h):
        return self.model(x_t, t, None, identity, context, context_mask, None, drop_identity,
                          audio_h=audio_h)


def cmdt_small(**overrides) -> CMDT:
    """The shipped size: 4 blocks x 128 wide (about 1 M parameters, a 4 MB file)."""
    return CMDT(CMDTConfig(**overrides))
