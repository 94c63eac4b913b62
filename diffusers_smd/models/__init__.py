"""SMD-aware models: diffusers UNet wrappers with the mixture modules, and helpers.

Each module here owns its ``__all__``; add a module with one ``from .module import *`` line and
its public names are collected below.
"""

import types as _types

from .identifier import *  # noqa: F403
from .introspection import *  # noqa: F403
from .mixture_noise import *  # noqa: F403
from .smd_unet_2d import *  # noqa: F403
from .smd_unet_2d_condition import *  # noqa: F403
from .smd_vector import *  # noqa: F403


def _collect_public_names(namespace: dict) -> list[str]:
    """Gather ``__all__`` of every submodule of this package imported above."""
    names: list[str] = []
    for value in list(namespace.values()):
        if isinstance(value, _types.ModuleType) and value.__name__.startswith(__name__ + "."):
            names.extend(getattr(value, "__all__", []))
    return names


__all__ = _collect_public_names(globals())
