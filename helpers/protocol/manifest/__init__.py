"""Azure IoT Edge deployment manifests, built and checked by pure functions.

A manifest here is the `modulesContent` dict Azure IoT Hub takes for a device (`set_modules`)
or an at-scale deployment: `$edgeAgent` (runtime, system modules, custom modules), `$edgeHub`
(routes, store and forward) and, optionally, one entry per module with its module twin's
desired properties. The local hub and Azure receive the same dict.

- `build`: module specs (`module_spec`, `collector_module`, `runner_module`) and `build_manifest`;
- `create_options`: createOptions as Azure stores it (512-character chunks);
- `secrets`: `Secret` values kept masked (`redact_manifest`), set (`with_secret_env`) and
  revealed for the wire (`reveal_secrets`);
- `read`: a module's environment and host port;
- `validate`: the published IoT Edge schemas (`schemas/`) plus the cross-field rules.

Secrets never travel as literals through the builders: a module that needs the studio API key
declares it (`secret_env`), and the caller supplies the value at deploy time as a
`helpers.config.Secret` (`build_manifest(..., secrets=...)` or `with_secret_env`).

Example:
    >>> from helpers.config import Secret
    >>> m = build_manifest([runner_module("me/edgeloop:1", 3, "http://127.0.0.1:8000")],
    ...                    secrets={"EI_API_KEY": Secret("ei_0123")})
    >>> validate_manifest(m)
    []
"""
from helpers.protocol.manifest.build import build_manifest, collector_module, module_spec, runner_module
from helpers.protocol.manifest.constants import (
    CONTAINER_PORT,
    EDGE_AGENT_IMAGE,
    EDGE_HUB_IMAGE,
    RESTART_POLICIES,
    SCHEMA_VERSIONS,
    STATUSES,
)
from helpers.protocol.manifest.create_options import CREATE_OPTIONS_CHUNK, parse_create_options, split_create_options
from helpers.protocol.manifest.read import module_env, module_host_port
from helpers.protocol.manifest.secrets import redact_manifest, reveal_secrets, with_secret_env
from helpers.protocol.manifest.validate import validate_manifest
from helpers.protocol.module_env import EI_API_KEY as ENV_API_KEY
from helpers.protocol.module_env import MODEL_VERSION as ENV_MODEL_VERSION

__all__ = [
    "CONTAINER_PORT",
    "CREATE_OPTIONS_CHUNK",
    "EDGE_AGENT_IMAGE",
    "EDGE_HUB_IMAGE",
    "ENV_API_KEY",
    "ENV_MODEL_VERSION",
    "RESTART_POLICIES",
    "SCHEMA_VERSIONS",
    "STATUSES",
    "build_manifest",
    "collector_module",
    "module_env",
    "module_host_port",
    "module_spec",
    "parse_create_options",
    "redact_manifest",
    "reveal_secrets",
    "runner_module",
    "split_create_options",
    "validate_manifest",
    "with_secret_env",
]
