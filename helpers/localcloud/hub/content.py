"""An IoT Edge `modulesContent` as the hub accepts it: `$edgeAgent` and `$edgeHub`, each module with an image."""
from __future__ import annotations

from typing import Any

from helpers.errors import InvalidManifest
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import check_twin_section
from helpers.protocol.manifest import validate_manifest


def validate_modules_content(content: Any, field: str = "modulesContent") -> dict[str, Any]:
    """Basic checks of an IoT Edge `modulesContent`, each module's desired properties within IoT Hub's
    twin limits, then the manifest module's own.

    Raises:
        ApiError: 400 naming the field that is wrong; `LimitError` (400/413) naming a twin limit.
    """
    if not isinstance(content, dict):
        raise ApiError(400, f"{field} must be a JSON object with $edgeAgent and $edgeHub", field, "ArgumentInvalid")
    for system in ("$edgeAgent", "$edgeHub"):
        part = content.get(system)
        if not isinstance(part, dict) or not isinstance(part.get("properties.desired"), dict):
            raise ApiError(400, f"{field}.{system} must be an object with 'properties.desired' (build it with "
                                "helpers.protocol.manifest.build_manifest)", f"{field}.{system}", "ArgumentInvalid")
    modules = content["$edgeAgent"]["properties.desired"].get("modules", {})
    if not isinstance(modules, dict):
        raise ApiError(400, f"{field}.$edgeAgent.properties.desired.modules must be an object of module name -> spec",
                       f"{field}.$edgeAgent", "ArgumentInvalid")
    for name, spec in modules.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("settings"), dict) or not spec["settings"].get("image"):
            raise ApiError(400, f"module {name!r} needs settings.image", f"{field}.$edgeAgent.modules.{name}", "ArgumentInvalid")
    for module_id, part in content.items():
        desired = part.get("properties.desired") if isinstance(part, dict) else None
        if not isinstance(desired, dict):
            continue  # not written into a twin (deploy.write_content skips it too)
        # each module twin's desired properties, within IoT Hub's twin limits (size, depth, finite numbers)
        check_twin_section({k: v for k, v in desired.items() if k not in ("$version", "$metadata")}, "desired",
                           f"{field}.{module_id}.properties.desired")
    try:
        validate_manifest(content)
    except InvalidManifest as exc:
        raise ApiError(400, str(exc), field, "ArgumentInvalid") from None
    return content
