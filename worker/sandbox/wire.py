"""The runner service's wire format: a sandbox spec and its result as JSON-ready dicts, both ways.

Spoken by the service (worker.sandbox.runner_daemon) and its client backend (worker.sandbox.remote); its own module
so that the client does not import the service. Imports the standard library and worker.sandbox.spec only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from worker.sandbox.spec import Mount, SandboxResult, SandboxSpec, Scratch


def spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["mounts"] = [[str(m.source), m.target] for m in spec.mounts]
    data["labels"] = dict(spec.labels)
    data["env"] = dict(spec.env)
    data["scratch"] = [[item.target, item.size_bytes] for item in spec.scratch]
    data["groups"] = list(spec.groups)
    return data


def spec_from_dict(data: Mapping[str, Any]) -> SandboxSpec:
    fields = dict(data)
    fields["mounts"] = tuple(Mount(Path(source), str(target)) for source, target in fields.get("mounts", []))
    fields["scratch"] = tuple(Scratch(str(target), int(size)) for target, size in fields.get("scratch", []))
    fields["groups"] = tuple(int(g) for g in fields.get("groups", []))
    return SandboxSpec(**fields)


def result_to_dict(result: SandboxResult) -> dict[str, Any]:
    data = asdict(result)
    data["output_dir"] = str(result.output_dir)
    return data


def result_from_dict(data: Mapping[str, Any]) -> SandboxResult:
    return SandboxResult(**{**data, "output_dir": Path(str(data["output_dir"]))})
