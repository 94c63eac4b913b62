"""diffusers-smd: Soft Mixture Denoising, E-TSDM and the dilation-path sampler for diffusers.

Every public name is importable from here, and public classes record ``diffusers_smd``
as their module so saved models keep loading when files move inside the package.
Each sub-module owns its ``__all__``; this file only gathers them.
"""

from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin, SchedulerMixin

from . import dilation, etsdm, losses, mixture, models, pipelines, schedulers
from ._public import publish_names
from .dilation import *  # noqa: F403
from .etsdm import *  # noqa: F403
from .losses import *  # noqa: F403
from .mixture import *  # noqa: F403
from .models import *  # noqa: F403
from .pipelines import *  # noqa: F403
from .schedulers import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "ConfigMixin",
    "DiffusionPipeline",
    "ModelMixin",
    "SchedulerMixin",
    *dilation.__all__,
    *etsdm.__all__,
    *losses.__all__,
    *mixture.__all__,
    *models.__all__,
    *pipelines.__all__,
    *schedulers.__all__,
]

publish_names(globals(), __all__)
