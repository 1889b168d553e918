"""Model registry (timm style): a model file decorates its constructors with `@register_model`,
and `create_model(name, **kwargs)` builds one by name."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

_MODEL_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {}


def register_model(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers `constructor` under its function name (e.g. `iresnet50`)."""
    name = constructor.__name__
    if name in _MODEL_CONSTRUCTORS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODEL_CONSTRUCTORS[name] = constructor
    return constructor


def list_models() -> list[str]:
    """Registered architecture names, IResNets first, by depth within a family."""

    def order(name: str) -> tuple[str, int, str]:
        match = re.fullmatch(r"([a-z]+)(\d*)(.*)", name)
        family, depth, variant = match.groups() if match else (name, "", "")
        return family, int(depth or 0), variant

    return sorted(_MODEL_CONSTRUCTORS, key=order)


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model `name` (e.g. "iresnet50", "ressanet50").

    kwargs: embedding_size (default 512), dropout (default 0.0; before the fc layer),
    input_size (default 112; other sizes only for quick tests: checkpoints, the app and the
    export all use 112). The model carries `model.input_config` (`fmr.models.InputConfig`):
    how its pixels are normalised.
    """
    try:
        constructor = _MODEL_CONSTRUCTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None
    from fmr.models.inputs import InputConfig

    model = constructor(**kwargs)
    model.input_config = InputConfig(input_size=int(getattr(model, "input_size", 112)))
    return model
