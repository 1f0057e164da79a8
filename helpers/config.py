"""Settings from the environment and a git-ignored settings file, and a masked `Secret` type.

Precedence (highest first): keyword overrides, environment variables, the settings file
(`EDGELOOP_SETTINGS_FILE`, else `.env` in the current directory or the repository root),
built-in defaults. Secrets are wrapped in `Secret` as soon as they are read, so a `repr`, a
log line or a notebook output shows `********`, never the value.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from helpers.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
MASK = "********"


class Secret:
    """A string that hides itself. Call `get_secret_value()` to read it, on purpose."""

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "secret"):
        if isinstance(value, Secret):
            value = value.get_secret_value()
        self._value = str(value)
        self.name = name

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name}={MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the value somewhere: refuse
        raise TypeError("Secret values are not picklable")


# Patterns of secret values as they appear in text; `mask()` replaces the value part.
_SECRET_PATTERNS = [
    re.compile(r"(SharedAccessKey=)[^;\s\"']+"),
    re.compile(r"(SharedAccessSignature\s+[^\s\"']*?sig=)[^&\s\"']+"),
    re.compile(r"(sig=)[A-Za-z0-9%+/=]{10,}"),
    re.compile(r"(x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+", re.IGNORECASE),
    re.compile(r"()\bei_[0-9a-fA-F]{16,}"),
    re.compile(r"()\blc_[A-Za-z0-9_-]{16,}"),
    re.compile(r"((?:password|token|api_key|apikey)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{4,}", re.IGNORECASE),
]


def mask(text: str) -> str:
    """Return `text` with every secret-looking value replaced by `********`."""
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: m.group(1) + MASK, text)
    return text


def mask_connection_string(cs: str | Secret) -> str:
    """`HostName=h;DeviceId=d;SharedAccessKey=********` for display."""
    value = cs.get_secret_value() if isinstance(cs, Secret) else cs
    return mask(value)


def parse_connection_string(cs: str | Secret) -> dict[str, str]:
    """Split an Azure-style `Key=Value;Key=Value` connection string.

    Raises:
        ConfigError: when a part has no `=` or HostName is missing.
    """
    value = cs.get_secret_value() if isinstance(cs, Secret) else str(cs)
    parts: dict[str, str] = {}
    for part in value.strip().split(";"):
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(
                f"connection string part {part.split('=')[0][:20]!r} has no '='; expected "
                "HostName=...;DeviceId=...;SharedAccessKey=..."
            )
        k, v = part.split("=", 1)
        parts[k.strip()] = v.strip()
    if "HostName" not in parts:
        raise ConfigError("connection string has no HostName=...; copy it whole from the hub")
    return parts


def read_settings_file(path: Path) -> dict[str, str]:
    """Parse a dotenv-style file: KEY=VALUE lines, `#` comments, optional quotes."""
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE")
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _settings_file() -> Path | None:
    explicit = os.environ.get("EDGELOOP_SETTINGS_FILE")
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"EDGELOOP_SETTINGS_FILE={explicit} does not exist")
        return p
    for candidate in (Path.cwd() / ".env", REPO_ROOT / ".env"):
        if candidate.is_file():
            return candidate
    return None


# name -> (environment variable, default, is_secret)
_FIELDS: dict[str, tuple[str, Any, bool]] = {
    "workspace": ("EDGELOOP_WORKSPACE", str(REPO_ROOT / "workspace"), False),
    "hub_backend": ("EDGELOOP_HUB", "local", False),
    "studio_backend": ("EDGELOOP_STUDIO", "local", False),
    "camera": ("EDGELOOP_CAMERA", "synthetic", False),
    "torch_threads": ("EDGELOOP_TORCH_THREADS", "2", False),
    "iothub_connection_string": ("IOTHUB_CONNECTION_STRING", "", True),
    "iothub_eventhub_connection_string": ("IOTHUB_EVENTHUB_CONNECTION_STRING", "", True),
    "ei_api_key": ("EI_API_KEY", "", True),
    "ei_device_api_key": ("EI_DEVICE_API_KEY", "", True),
    "ei_project_id": ("EI_PROJECT_ID", "", False),
    "ei_ingestion_url": ("EI_INGESTION_URL", "https://ingestion.edgeimpulse.com", False),
    "ei_studio_url": ("EI_STUDIO_URL", "https://studio.edgeimpulse.com", False),
    "registry": ("EDGELOOP_REGISTRY", "", False),
    "registry_username": ("REGISTRY_USERNAME", "", False),
    "registry_password": ("REGISTRY_PASSWORD", "", True),
    "image_name": ("EDGELOOP_IMAGE", "edgeloop-device", False),
    "runtime": ("EDGELOOP_RUNTIME", "process", False),
}


@dataclass
class Settings:
    """Resolved settings. Secret fields are `Secret`; everything else is a plain value."""

    workspace: Path
    hub_backend: str = "local"
    studio_backend: str = "local"
    camera: str = "synthetic"
    torch_threads: int = 2
    iothub_connection_string: Secret = field(default_factory=lambda: Secret("", "IOTHUB_CONNECTION_STRING"))
    #: the hub's built-in Event Hubs-compatible endpoint (telemetry), Azure portal: Built-in endpoints
    iothub_eventhub_connection_string: Secret = field(
        default_factory=lambda: Secret("", "IOTHUB_EVENTHUB_CONNECTION_STRING"))
    ei_api_key: Secret = field(default_factory=lambda: Secret("", "EI_API_KEY"))
    #: the key devices get on a real project (an ingestion-only key); the local studio derives its own
    ei_device_api_key: Secret = field(default_factory=lambda: Secret("", "EI_DEVICE_API_KEY"))
    ei_project_id: str = ""
    ei_ingestion_url: str = "https://ingestion.edgeimpulse.com"
    ei_studio_url: str = "https://studio.edgeimpulse.com"
    registry: str = ""
    registry_username: str = ""
    registry_password: Secret = field(default_factory=lambda: Secret("", "REGISTRY_PASSWORD"))
    image_name: str = "edgeloop-device"
    #: the simulated devices' module runtime: `process` (start.sh) or `container` (the image)
    runtime: str = "process"
    source: dict[str, str] = field(default_factory=dict, repr=False)

    def require(self, name: str) -> Any:
        """The value of setting `name`, or a ConfigError naming the variable to set."""
        value = getattr(self, name)
        if not value:
            env = _FIELDS[name][0]
            raise ConfigError(f"{env} is not set: export it or add `{env}=...` to .env (see .env.example)")
        return value


def load_settings(workspace: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings from overrides, the environment and the settings file.

    Args:
        workspace: the workspace folder (state of the local cloud, devices, models).
        **overrides: any `Settings` field by name.

    Raises:
        ConfigError: unknown override names or a value of the wrong type.
    """
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
    file_path = _settings_file()
    file_values = read_settings_file(file_path) if file_path else {}
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, (env, default, secret) in _FIELDS.items():
        if name in overrides and overrides[name] is not None:
            raw, src = overrides[name], "argument"
        elif name == "workspace" and workspace is not None:
            raw, src = workspace, "argument"
        elif env in os.environ:
            raw, src = os.environ[env], f"env {env}"
        elif env in file_values:
            raw, src = file_values[env], f"file {file_path}"
        else:
            raw, src = default, "default"
        source[name] = src
        if secret:
            values[name] = Secret(raw, env)
        elif name == "workspace":
            values[name] = Path(raw).expanduser().resolve()
        elif name == "runtime" and str(raw) not in ("process", "container", "docker"):
            raise ConfigError(f"{env}={raw!r} is not a module runtime: use process (start.sh as a process) or "
                              "container (the device image, through a Docker-API engine: `make containers`)")
        elif name == "torch_threads":
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{env} must be an integer, got {raw!r}") from None
        else:
            values[name] = str(raw)
    return Settings(**values, source=source)


def settings_table(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, shown value, where it came from) rows for display; secrets masked."""
    rows = []
    for f in fields(settings):
        if f.name == "source":
            continue
        v = getattr(settings, f.name)
        shown = ("(set) " + MASK if v else "(not set)") if isinstance(v, Secret) else str(v)
        rows.append((f.name, shown, settings.source.get(f.name, "")))
    return rows
