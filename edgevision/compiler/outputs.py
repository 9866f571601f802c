"""Pick the classifier's output from what a PyTorch model returns.

People's models return a tensor, a tuple or list, a dict, or a Hugging Face ``ModelOutput`` (an
ordered dict whose classifier output is ``logits``). The compiler exports one N x classes tensor;
this finds it (``logits`` by convention, or ``--model-output NAME|INDEX``) or says in one line why not.
"""
from __future__ import annotations

from typing import Any

from ..errors import InputError

# A path into the returned structure: (key or index, ...); () means "the tensor itself".
OutputPath = tuple


def _describe(obj: Any) -> str:
    import torch

    if isinstance(obj, torch.Tensor):
        return f"tensor {list(obj.shape)}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in list(obj.items())[:6]) + "}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(_describe(v) for v in obj[:6]) + ")"
    return type(obj).__name__


def _tensors(obj: Any) -> list[tuple[Any, Any]]:
    """The (key, value) members of a dict-like or sequence output that are tensors."""
    import torch

    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    return [(k, v) for k, v in items if isinstance(v, torch.Tensor)]


def find_output(returned: Any, choice: str | int | None, what: str) -> OutputPath:
    """Where the classifier output is in ``returned`` (one forward pass's result)."""
    import torch

    if isinstance(returned, torch.Tensor):
        if choice not in (None, 0, "0", "logits"):
            raise InputError(f"{what} returns one tensor; there is no output {choice!r} to choose",
                             "leave out --model-output")
        return ()
    if not isinstance(returned, (dict, list, tuple)):
        raise InputError(f"{what} returns {type(returned).__name__}, not a tensor, tuple, dict or ModelOutput",
                         "return the class scores (logits) as a tensor")
    members = _tensors(returned)
    listing = _describe(returned)
    if not members:
        raise InputError(f"{what} returns no tensor ({listing})", "return the class scores (logits) as a tensor")
    keys = [k for k, _ in members]
    if choice is None:
        if "logits" in keys:
            return ("logits",)
        if len(members) == 1:
            return (keys[0],)
        raise InputError(f"{what} returns {len(members)} outputs {listing}; edgevision compiles one N x classes output",
                         "name the classifier's with --model-output NAME|INDEX (or output = ... in the model card)")
    if choice in keys:
        return (choice,)
    if isinstance(choice, int) or str(choice).isdigit():
        index = int(choice)
        if 0 <= index < len(members):
            return (keys[index],)
    raise InputError(f"{what} has no output {choice!r}; it returns {listing}",
                     "pass one of its names or an index (0 is the first tensor)")


def pick(returned: Any, path: OutputPath) -> Any:
    for key in path:
        returned = returned[key]
    return returned


def output_name(path: OutputPath) -> str:
    return "logits" if not path or not isinstance(path[0], str) else path[0]


def selecting(module: Any, path: OutputPath) -> Any:
    """``module`` returning only the output at ``path`` (itself when it returns that tensor already)."""
    if not path:
        return module
    import torch

    class SelectOutput(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return pick(self.inner(x), path)

    return SelectOutput(module).eval()
