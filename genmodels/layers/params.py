"""Initialisation and optimizer-tagging helpers shared by every backbone.

Tags live on *modules*, not on parameter tensors: ``from_pretrained`` (accelerate's meta-device loading),
FSDP and ``load_state_dict(assign=True)`` replace parameter objects, and an attribute stored on the old
tensor would be lost with it. A module tag applies to every parameter beneath that module.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

_TAGS_ATTR = "_lingen_param_tags"


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight (and bias, if any) so that a residual branch starts as the identity."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def tag_module(module: nn.Module, tag: str, *, weights_only: bool = False) -> nn.Module:
    """Tag every parameter under ``module`` (only those named ``*weight`` when ``weights_only``)."""
    tags = module.__dict__.get(_TAGS_ATTR)
    if tags is None:
        tags = []
        object.__setattr__(module, _TAGS_ATTR, tags)
    if (tag, weights_only) not in tags:
        tags.append((tag, weights_only))
    return module


def apply_wd(module: nn.Module) -> nn.Module:
    """Mark the ``*weight`` parameters under ``module`` for weight decay (tag ``"wd"``)."""
    return tag_module(module, "wd", weights_only=True)


def param_tags(model: nn.Module) -> dict[str, frozenset[str]]:
    """Resolve module tags to ``{parameter name: tags}`` for every parameter of ``model``."""
    tags: dict[str, set[str]] = {name: set() for name, _ in model.named_parameters()}
    for prefix, module in model.named_modules():
        for tag, weights_only in module.__dict__.get(_TAGS_ATTR, ()):
            for name, _ in module.named_parameters(prefix=prefix):
                if not weights_only or name.endswith("weight"):
                    tags[name].add(tag)
    return {name: frozenset(t) for name, t in tags.items()}


def filter_params(model: nn.Module, predicate) -> Iterable[nn.Parameter]:
    """Parameters of ``model`` whose tag set satisfies ``predicate(tags) -> bool``."""
    tags = param_tags(model)
    for name, param in model.named_parameters():
        if predicate(tags[name]):
            yield param


def make_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, *, mapping_lr_scale: float = 1 / 3
) -> list[dict]:
    """Optimizer groups: weight decay only on ``"wd"``-tagged weights, lr × ``mapping_lr_scale`` on
    ``"mapping"``-tagged ones. Empty groups are dropped; each group carries a ``name`` for logging."""
    tags = param_tags(model)
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = ("mapping" in tags[name], "wd" in tags[name])
            buckets.setdefault(key, []).append(param)
    groups = []
    for mapping in (False, True):
        for wd in (True, False):
            params = buckets.get((mapping, wd), [])
            if params:
                groups.append({
                    "name": ("mapping_" if mapping else "") + ("wd" if wd else "no_wd"),
                    "params": params,
                    "lr": base_lr * (mapping_lr_scale if mapping else 1.0),
                    "weight_decay": weight_decay if wd else 0.0,
                })
    return groups
