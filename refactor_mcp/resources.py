"""Turning validated resources into what the API accepts.

A caller may name an existing resource by a bare id string (the spec's description allows it), but the
spec's schema only has the object form, so the request always carries `{"id": ...}`.
"""

from __future__ import annotations

from typing import Any

from .models import ResourceBinding, RunRequest


def resolve(binding: ResourceBinding) -> dict[str, Any]:
    """One `resources` entry in the spec's shape."""
    resource = binding.resource
    entry: dict[str, Any] = {} if binding.name is None else {"name": binding.name}
    if isinstance(resource, str):
        entry["resource"] = {"id": resource}
    else:
        entry["resource"] = resource.model_dump(mode="json", exclude_none=True)
    return entry


def request_body(request: RunRequest) -> dict[str, Any]:
    """The JSON body of the run request; fields the caller left out are left out."""
    body: dict[str, Any] = {"telemetry_strategy": request.telemetry_strategy}
    if request.resources is not None:
        body["resources"] = [resolve(binding) for binding in request.resources]
    if request.timeout_seconds is not None:
        body["timeout_seconds"] = request.timeout_seconds
    return body
