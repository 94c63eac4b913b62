"""Does a diffusers scheduler method read timestep VALUES? A conservative static check of its source.

The E-TSDM variants run a parent method on the real grid with a translated timestep (:mod:`.etsdm_mixin`).
That costs about a microsecond per call, which matters for cheap solvers such as flow-matching Euler
(about 20 us per step). Many parents' ``step`` / ``scale_model_input`` look at the timestep only to find
where a loop starts (``self._init_step_index(timestep)``, which the variants translate) and read
``self.timesteps`` only for its length; such a method needs no translation at all.

:func:`reads_timestep_values` says whether a method may read more than that. It answers True (translate)
whenever it cannot prove otherwise: source unavailable, the timestep passed anywhere else, any
``self.timesteps`` use other than ``len(self.timesteps)`` in the method or in any method or property of the
class it reaches through ``self``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

__all__ = ["reads_timestep_values"]

_TIMESTEP_PARAMETERS = ("timestep", "timesteps")
# methods that receive the timestep and are translated themselves
_TRANSLATED_CALLS = ("_init_step_index",)


def _function_tree(owner: type, name: str) -> ast.FunctionDef | None:
    member = inspect.getattr_static(owner, name, None)
    function = member.fget if isinstance(member, property) else member
    function = getattr(function, "__func__", function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_self_attribute(node: ast.AST, attribute: str | None = None) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and (attribute is None or node.attr == attribute)
    )


def _reads_grid_values(owner: type, tree: ast.AST, seen: set[str]) -> bool:
    """Whether ``tree`` (or what it reaches through ``self``) uses ``self.timesteps`` other than in ``len()``."""
    parents = _parents(tree)
    for node in ast.walk(tree):
        if not _is_self_attribute(node):
            continue
        if node.attr == "timesteps":
            call = parents.get(node)
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "len"):
                return True
        elif node.attr not in seen and _is_method_or_property(owner, node.attr):
            seen.add(node.attr)
            reached = _function_tree(owner, node.attr)
            if reached is None or _reads_grid_values(owner, reached, seen):
                return True
    return False


def _is_method_or_property(owner: type, name: str) -> bool:
    member = inspect.getattr_static(owner, name, None)
    return isinstance(member, property) or inspect.isfunction(getattr(member, "__func__", member))


@functools.cache
def reads_timestep_values(owner: type, name: str) -> bool:
    """Whether ``owner.name`` may read timestep values (True unless provably not; see the module docstring)."""
    tree = _function_tree(owner, name)
    if tree is None:
        return True
    arguments = [a.arg for a in tree.args.args + tree.args.kwonlyargs]
    parameter = next((a for a in arguments if a in _TIMESTEP_PARAMETERS), None)
    parents = _parents(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == parameter:
            if isinstance(node.ctx, ast.Store):
                return True
            call = parents.get(node)
            translated = isinstance(call, ast.Call) and any(
                _is_self_attribute(call.func, allowed) for allowed in _TRANSLATED_CALLS
            )
            type_check = (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "isinstance"
            )
            if not (translated or type_check) or not call.args or node is not call.args[0]:
                return True
    return _reads_grid_values(owner, tree, {name, *_TRANSLATED_CALLS})
