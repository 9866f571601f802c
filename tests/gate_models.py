"""Small real models whose outputs the accuracy gate must refuse, or judge by cosine (test_gate.py)."""
from __future__ import annotations

from reliability_models import _spec, _tiny_module


def _wrapped(name: str, transform):
    import torch
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _tiny_module()

        def forward(self, x):
            return transform(self.net(x), x)

    torch.manual_seed(0)
    return _spec(Wrapped().eval(), name)


def nan_output():
    """Logits times NaN wherever the input is darker than mid-grey on average: NaN on real photos."""
    import torch

    return _wrapped("nan-output", lambda y, x: y + torch.log(x.mean() - 10.0))


def constant_output():
    """The same 10 logits whatever the image (the input is multiplied by zero)."""
    return _wrapped("constant-output", lambda y, x: y * 0 + (x * 0).sum() + 1.5 * (y * 0 + 1).cumsum(1))


def vanishing_output():
    """Logits ~1e-22: the model outputs nothing."""
    return _wrapped("vanishing-output", lambda y, x: y * 1e-22)


def flat_logits():
    """A random-init-like head: logits within ~1e-3 of each other, top-1 a near-tie on every image."""
    return _wrapped("flat-logits", lambda y, x: y * 1e-3)


def decisive_tiny():
    """Tiny net with a sharp head: its top-1 is decisive on most real images."""
    return _wrapped("decisive-tiny", lambda y, x: y * 40)
