"""A seed ensemble: several U-Nets of one recipe (trained with different seeds) as one model.

Its logits are the mean of its members' logits, so everything that takes a model's logits
(a threshold, test-time flips, small-component removal) takes the ensemble unchanged.
"""
from __future__ import annotations

import torch


class SeedEnsemble(torch.nn.Module):
    """The mean of the members' logits (each member maps (B,1,S,S) images to (B,1,S,S) logits)."""

    def __init__(self, members):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a seed ensemble needs at least 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    @property
    def in_channels(self) -> int:
        return self.members[0].in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
