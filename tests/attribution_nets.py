"""Tiny networks for the attribution-method tests (imported by tests/test_attribution_*.py)."""
from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(seed: int = 0, act: type[nn.Module] = nn.ReLU, bias: bool = True, classes: int = 5) -> nn.Module:
    """conv(3->4) act conv(4->6) act global-average-pool linear(6->classes), seeded, eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=bias), act(),
        nn.Conv2d(4, 6, 3, padding=1, bias=bias), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes, bias=bias),
    )
    return net.eval()


class TinyResidual(nn.Module):
    """stem conv, ReLU, one residual block ``relu(conv2(relu(conv1(h))) + h)``, pool, linear; no biases."""

    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.act0 = nn.ReLU()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act0(self.stem(x))
        y = self.conv2(self.act1(self.conv1(h)))
        return self.fc(self.flat(self.pool(self.act2(y + h))))
