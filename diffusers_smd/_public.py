"""Give public classes a stable home: ``diffusers_smd``.

diffusers records ``cls.__module__`` of custom components in ``model_index.json``. If that
were an internal path (``diffusers_smd.models.smd_unet_2d``), moving a file would break
every saved model. Public classes therefore report ``diffusers_smd`` as their module.
"""

from __future__ import annotations

PUBLIC_MODULE = "diffusers_smd"


def publish_names(namespace: dict, names: list[str]) -> None:
    """Set ``__module__`` of every public class in ``names`` to :data:`PUBLIC_MODULE`."""
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type) and obj.__module__.startswith(PUBLIC_MODULE):
            obj.__module__ = PUBLIC_MODULE
