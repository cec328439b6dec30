"""Multi-head self-attention as a prunable unit: whole heads are kept or removed.

A head owns ``head_dim`` rows of each of q, k and v in the fused ``qkv`` projection and the same
``head_dim`` input columns of the output projection ``proj``. Torch-Pruning's dependency graph
couples the three rows and the column of one position (the ``unbind`` of q, k, v); this module adds
what the graph cannot know: which positions form a head, and the ``num_heads`` attribute that the
attention's forward reshapes with.

Only whole heads are removed. Removing some dimensions of every head would change ``head_dim``,
and with it the softmax temperature ``1 / sqrt(head_dim)`` of fused attention, so the stripped model
would no longer compute what the masked one did.

The layout is timm's (``Attention`` in ViT, DeiT and MobileViT): ``qkv`` of ``3 * num_heads *
head_dim`` outputs ordered ``[q | k | v]``, each ``[head 0 | head 1 | ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AttentionLayout:
    """One attention module of a model.

    :param module: qualified name of the attention module.
    :param qkv: its fused q/k/v projection.
    :param proj: its output projection.
    :param num_heads: heads before pruning.
    :param head_dim: channels per head (unchanged by pruning).
    """

    module: str
    qkv: str
    proj: str
    num_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        """Channels of q (and of k, v and the projection's input): ``num_heads * head_dim``."""
        return self.num_heads * self.head_dim

    def channels(self, heads: list[int]) -> list[int]:
        """The q positions of ``heads`` (the dependency graph adds the k and v rows and ``proj``'s columns)."""
        return [h * self.head_dim + d for h in heads for d in range(self.head_dim)]

    def row_heads(self) -> torch.Tensor:
        """The head of each of the ``3 * width`` output rows of ``qkv``."""
        return (torch.arange(3 * self.width) % self.width) // self.head_dim

    def head_l1(self, model: nn.Module) -> torch.Tensor:
        """L1 norm of each head's weights: its q, k, v rows (and biases) and its ``proj`` columns."""
        qkv, proj = model.get_submodule(self.qkv), model.get_submodule(self.proj)
        assert isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
        with torch.no_grad():
            rows = qkv.weight.abs().sum(dim=1)
            if qkv.bias is not None:
                rows = rows + qkv.bias.abs()
            heads = self.row_heads().to(rows.device)
            per_head = torch.zeros(self.num_heads, device=rows.device).index_add_(0, heads, rows)
            columns = proj.weight.abs().sum(dim=0).view(self.num_heads, self.head_dim).sum(dim=1)
        return (per_head + columns).detach().cpu()


def _is_attention(module: nn.Module) -> bool:
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
    return (
        isinstance(qkv, nn.Linear)
        and isinstance(proj, nn.Linear)
        and isinstance(heads, int)
        and isinstance(head_dim, int)
        and qkv.out_features == 3 * heads * head_dim
        and proj.in_features == heads * head_dim
    )


def find_attention(model: nn.Module) -> dict[str, AttentionLayout]:
    """Every attention module of ``model`` with timm's fused-qkv layout, by the name of its ``qkv``."""
    result = {}
    for name, module in model.named_modules():
        if _is_attention(module):
            prefix = f"{name}." if name else ""
            result[f"{prefix}qkv"] = AttentionLayout(
                name, f"{prefix}qkv", f"{prefix}proj", int(module.num_heads), int(module.head_dim)
            )
    return result


def unsafe_reason(model: nn.Module, layout: AttentionLayout) -> str | None:
    """Why removing heads of this attention would change what the remaining heads compute, if it would."""
    module = model.get_submodule(layout.module)
    for attribute in ("q_norm", "k_norm"):
        norm = getattr(module, attribute, None)
        if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
            return f"{layout.module} normalizes q and k per head ({attribute}: {type(norm).__name__})"
    norm = getattr(module, "norm", None)
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        return f"{layout.module} normalizes the concatenated heads ({type(norm).__name__})"
    if getattr(module, "gate", None) is not None:
        return f"{layout.module} gates its heads with another projection"
    return None


def set_num_heads(model: nn.Module, layout: AttentionLayout, kept: int) -> None:
    """After the rows of removed heads are gone: the attention reshapes into ``kept`` heads."""
    module = model.get_submodule(layout.module)
    setattr(module, "num_heads", kept)  # noqa: B010  (a plain attribute of timm's Attention)
    if hasattr(module, "attn_dim"):
        setattr(module, "attn_dim", kept * layout.head_dim)  # noqa: B010
