"""Write hooks: domain rules that must hold on every path a resource is written by.

A domain registers a hook for a resource type (e.g. the hospital module for Appointment:
one booking per Slot). The repository calls every hook of a type with the planned writes
of that type just before persisting them, inside the same unit of work, whatever the door
(REST create/update/patch/delete, transaction and batch Bundles, in-process services).
A hook may raise a `YiyunError` (the whole write is refused and nothing is written), may
change `plan.resource` (the stored content), and may write other resources through the
same repository (those writes pass their own type's hooks).

Hooks are registered at import time by the modules that own the rule; the composition
root imports them. Keep hooks cheap: they run on every write of their type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yiyun.fhir.repository import FhirRepository, PlannedWrite

WriteHook = Callable[["FhirRepository", list["PlannedWrite"]], Awaitable[Any]]

_hooks: dict[str, list[WriteHook]] = {}


def register_write_hook(res_type: str, hook: WriteHook) -> None:
    """Add `hook` for writes of `res_type` (registering the same hook twice is a no-op)."""
    hooks = _hooks.setdefault(res_type, [])
    if hook not in hooks:
        hooks.append(hook)


def unregister_write_hook(res_type: str, hook: WriteHook) -> None:
    hooks = _hooks.get(res_type, [])
    if hook in hooks:
        hooks.remove(hook)


def hooks_for(res_type: str) -> list[WriteHook]:
    return _hooks.get(res_type, [])


def any_hooks() -> bool:
    return any(_hooks.values())


async def run_write_hooks(repo: "FhirRepository", plans: list["PlannedWrite"]) -> None:
    """Run each type's hooks once with that type's plans, in plan order of first appearance."""
    if not any_hooks():
        return
    by_type: dict[str, list] = {}
    for plan in plans:
        if hooks_for(plan.res_type):
            by_type.setdefault(plan.res_type, []).append(plan)
    for res_type, typed in by_type.items():
        for hook in hooks_for(res_type):
            await hook(repo, typed)
