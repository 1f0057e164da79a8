"""Where a workspace's embedded stand-in is: the endpoint and credential a client is handed.

The one module that reads a workspace's `localcloud/service.json` and `credentials.json` for
the clients, so that a client of the stand-in gets exactly what a user of the real service
gives it (a connection string and a CA file; an API key and a URL) and never imports the
stand-in itself. It only reads files; `helpers.session.connect` (or `python -m
helpers.localcloud start`) starts the service that writes them.

    hub = local_hub(workspace)       # LocalHubEndpoint: connection_string, ca_file, rest_url, address
    studio = local_studio(workspace) # LocalStudioEndpoint: url, api_key, ingestion_url
    events = local_eventhub(workspace) # LocalEventHubEndpoint: connection_string (Event Hubs-compatible), ca_file

Files (written by `helpers.localcloud.service`, owner-only):
    WORKSPACE/localcloud/service.json      {"url", "pid", "port", "hub_address", "hub_port", "hub_url", "ca_file", ...}
    WORKSPACE/localcloud/credentials.json  {"service_connection_string", "studio_api_key"}
    WORKSPACE/localcloud/tls/ca.pem        the workspace CA the hub's TLS endpoints chain to
    WORKSPACE/localcloud/tls/address.json  {"address"}: the workspace's loopback address for the hub
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import Secret, load_settings, parse_connection_string
from helpers.errors import ConfigError, ServiceUnavailable


def resolve_workspace(workspace: str | Path | None) -> Path:
    """The workspace folder: the argument, else `load_settings().workspace`."""
    return Path(workspace).expanduser().resolve() if workspace is not None else load_settings().workspace


def cloud_dir(workspace: str | Path | None) -> Path:
    """WORKSPACE/localcloud/: the stand-in's state, service file and credentials."""
    return resolve_workspace(workspace) / "localcloud"


def _start_hint(workspace: str | Path | None) -> str:
    return f"`python -m helpers.localcloud start --workspace {resolve_workspace(workspace)}` (or `session.connect()`)"


def read_service(workspace: str | Path | None) -> dict[str, Any] | None:
    """service.json as a dict, or None when the service never started here."""
    path = cloud_dir(workspace) / "service.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def service_url(workspace: str | Path | None, url: str | None = None) -> str:
    """The local cloud's base URL without a trailing slash: `url` when given, else service.json's.

    Raises:
        ServiceUnavailable: the service never started in `workspace` (the message says how to start it).
    """
    info = read_service(workspace) or {}
    url = url or info.get("url")
    if not url:
        raise ServiceUnavailable(f"the local cloud never started in {workspace}: run {_start_hint(workspace)}", 0)
    return str(url).rstrip("/")


def read_credentials(workspace: str | Path | None) -> dict[str, Secret]:
    """`{"service_connection_string": Secret, "studio_api_key": Secret}` from credentials.json.

    Raises:
        ConfigError: the file is missing (the local cloud never started in this workspace).
    """
    path = cloud_dir(workspace) / "credentials.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: start the local cloud first with {_start_hint(workspace)}")
    raw = json.loads(path.read_text())
    return {
        "service_connection_string": Secret(raw["service_connection_string"], "service_connection_string"),
        "studio_api_key": Secret(raw["studio_api_key"], "studio_api_key"),
    }


def ca_file(workspace: str | Path | None) -> Path:
    """The CA certificate to trust for the workspace's hub (`localcloud/tls/ca.pem`).

    Raises:
        ConfigError: there is none yet (the local cloud never started in this workspace).
    """
    path = cloud_dir(workspace) / "tls" / "ca.pem"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: start the local cloud first with {_start_hint(workspace)}")
    return path


def hub_address(workspace: str | Path | None) -> str | None:
    """The workspace's loopback address for the hub (HTTPS and MQTT), or None before the first start."""
    info = read_service(workspace) or {}
    if info.get("hub_address"):
        return str(info["hub_address"])
    path = cloud_dir(workspace) / "tls" / "address.json"
    return str(json.loads(path.read_text())["address"]) if path.is_file() else None


@dataclass(frozen=True)
class LocalHubEndpoint:
    """What an IoT Hub tool needs to reach a workspace's local hub: what a user of Azure has.

    Attributes:
        connection_string: the hub's service connection string (`iothubowner` policy), masked.
        ca_file: the CA certificate to trust for the hub's HTTPS and MQTT endpoints.
        rest_url: the hub's HTTPS URL (`https://HostName` of the connection string).
        address: the loopback address devices connect to (MQTT on 8883); their `HostName`.
        workspace: the workspace folder.
    """

    connection_string: Secret
    ca_file: Path
    rest_url: str
    address: str | None
    workspace: Path


def local_hub(workspace: str | Path | None = None) -> LocalHubEndpoint:
    """The workspace's local hub as a connection string and a CA file.

    Raises:
        ConfigError: the local cloud never started in this workspace (the message says how to).
    """
    ws = resolve_workspace(workspace)
    cs = read_credentials(ws)["service_connection_string"]
    host = next((p.split("=", 1)[1] for p in cs.get_secret_value().split(";") if p.startswith("HostName=")), None)
    if not host:
        raise ConfigError(f"{cloud_dir(ws) / 'credentials.json'} holds a service connection string without HostName: "
                          f"stop the local cloud and start it again ({_start_hint(ws)})")
    return LocalHubEndpoint(connection_string=cs, ca_file=ca_file(ws), rest_url=f"https://{host}",
                            address=hub_address(ws), workspace=ws)


@dataclass(frozen=True)
class LocalStudioEndpoint:
    """What an Edge Impulse client needs to reach a workspace's local studio.

    Attributes:
        url: the studio's base URL (Studio API under `/v1/api`, ingestion under `/api/...`).
        api_key: the project's management API key (`EI_API_KEY`), masked.
        ingestion_url: the ingestion service's base URL (`EI_INGESTION_ENDPOINT`).
        workspace: the workspace folder.
    """

    url: str
    api_key: Secret
    ingestion_url: str
    workspace: Path


def local_studio(workspace: str | Path | None = None, url: str | None = None) -> LocalStudioEndpoint:
    """The workspace's local studio as an API key and a URL (`url` overrides service.json's).

    Raises:
        ConfigError / ServiceUnavailable: the local cloud never started in this workspace.
    """
    ws = resolve_workspace(workspace)
    key = Secret(read_credentials(ws)["studio_api_key"].get_secret_value(), "EI_API_KEY")
    base = service_url(ws, url)
    return LocalStudioEndpoint(url=base, api_key=key, ingestion_url=base, workspace=ws)


@dataclass(frozen=True)
class LocalEventHubEndpoint:
    """What an Event Hubs client needs to read the local hub's telemetry: what Azure's portal shows.

    Attributes:
        connection_string: `Endpoint=sb://ADDRESS/;SharedAccessKeyName=iothubowner;SharedAccessKey=...;
            EntityPath=NAME`, masked (IoT Hub's "Event Hub-compatible endpoint" with the service policy).
        ca_file: the CA certificate to trust for the endpoint (`connection_verify=` of `azure-eventhub`).
        name: the Event Hubs-compatible name (`EntityPath`).
        consumer_groups: the consumer groups that exist (`$Default`).
        partitions: how many partitions the endpoint has.
    """

    connection_string: Secret
    ca_file: Path
    name: str
    consumer_groups: tuple[str, ...]
    partitions: int


def local_eventhub(workspace: str | Path | None = None) -> LocalEventHubEndpoint:
    """The workspace hub's built-in Event Hubs-compatible endpoint, as service.json tells it.

    Raises:
        ConfigError: the local cloud never started here, or its endpoint did not start (the
            message is service.log's reason, e.g. port 5671 taken on the hub's address).
    """
    ws = resolve_workspace(workspace)
    info = read_service(ws) or {}
    if info.get("eventhub_error"):
        raise ConfigError(f"{info['eventhub_error']} (see {cloud_dir(ws) / 'service.log'}; fix it and restart the local "
                          f"cloud: {_start_hint(ws)})")
    if not info.get("eventhub_endpoint") or not info.get("eventhub_name"):
        raise ConfigError(f"the local cloud in {ws} has not served the Event Hubs-compatible endpoint yet: start it "
                          f"with {_start_hint(ws)}")
    key = parse_connection_string(read_credentials(ws)["service_connection_string"])
    cs = (f"Endpoint={info['eventhub_endpoint']};SharedAccessKeyName={key['SharedAccessKeyName']};"
          f"SharedAccessKey={key['SharedAccessKey']};EntityPath={info['eventhub_name']}")
    return LocalEventHubEndpoint(connection_string=Secret(cs, "eventhub_connection_string"), ca_file=ca_file(ws),
                                 name=str(info["eventhub_name"]),
                                 consumer_groups=tuple(info.get("eventhub_consumer_groups") or ("$Default",)),
                                 partitions=int(info.get("eventhub_partitions") or 0))


__all__ = ["LocalEventHubEndpoint", "LocalHubEndpoint", "LocalStudioEndpoint", "ca_file", "local_eventhub", "cloud_dir", "hub_address", "local_hub", "local_studio",
           "read_credentials", "read_service", "resolve_workspace", "service_url"]
