"""E-TSDM schedulers: drop-in variants of 14 diffusers schedulers, built by one mechanism.

* :mod:`.etsdm_mixin`: the mechanism (``ETSDMSchedulerMixin``);
* :mod:`.etsdm_schedulers`: the 14 declarations ``ETSDM<Parent>``;
* :mod:`.etsdm_conversion`: parent -> variant mapping, reading a saved config's settings, conversion.
"""

from .etsdm_conversion import ETSDM_VARIANTS, convert_to_etsdm, etsdm_settings_from_config, etsdm_variant
from .etsdm_mixin import ETSDM_CONFIG_KEYS, ETSDMSchedulerMixin
from .etsdm_schedulers import *  # noqa: F403
from .etsdm_schedulers import __all__ as _scheduler_names

__all__ = [
    "ETSDM_CONFIG_KEYS",
    "ETSDM_VARIANTS",
    "ETSDMSchedulerMixin",
    "convert_to_etsdm",
    "etsdm_settings_from_config",
    "etsdm_variant",
    *_scheduler_names,
]
