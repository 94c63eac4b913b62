"""Training objectives (vanilla, smd, smd-mixture) and the Gaussian-step math they are built from."""

from .gaussian_steps import *  # noqa: F403
from .gaussian_steps import __all__ as _gaussian_steps_all
from .objectives import *  # noqa: F403
from .objectives import __all__ as _objectives_all

__all__: list[str] = [*_gaussian_steps_all, *_objectives_all]
