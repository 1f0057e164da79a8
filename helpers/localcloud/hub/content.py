"""An IoT Edge `modulesContent` as the hub accepts it: `$edgeAgent` and `$edgeHub`, each module with an image."""
from __future__ import annotations

from typing import Any

from helpers.errors import InvalidManifest
from helpers.localcloud.common.errors import ApiError
from helpers.protocol.manifest import validate_manifest


def validate_modules_content(content: Any, field: str = "modulesContent") -> dict[str, Any]:
    """Basic checks of an IoT Edge `modulesContent`, then the manifest module's own.

    Raises:
        ApiError: 400 naming the field that is wrong.
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
    try:
        validate_manifest(content)
    except InvalidManifest as exc:
        raise ApiError(400, str(exc), field, "ArgumentInvalid") from None
    return content
