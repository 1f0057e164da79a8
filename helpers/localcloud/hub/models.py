"""Request bodies of the IoT Hub service API as pydantic models, in the shapes the azure-iot-hub SDK sends.

Field names are the wire's (camelCase, as `msrest` serialises the SDK's `Device`, `Module`,
`Twin`, `Configuration`, `QuerySpecification`, `CloudToDeviceMethod`...). Every model allows
extra fields, as IoT Hub does: the SDK sends back what it read (etags, timestamps, metrics,
`connectionState`...), which the hub ignores. Type errors answer 400 `ArgumentInvalid` naming
the field (the app's validation handler); the rules IoT Hub states in words (key lengths,
id patterns, reserved module ids, the edge manifest) are checked by the handlers.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from helpers.localcloud.common.errors import ApiError

THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")


class _Open(BaseModel):
    """A wire object: the declared fields are checked, the others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class SymmetricKey(_Open):
    primaryKey: str | None = Field(None, description="base64 of 16 to 64 bytes; generated when absent")
    secondaryKey: str | None = Field(None, description="base64 of 16 to 64 bytes; generated when absent")


class X509Thumbprint(_Open):
    primaryThumbprint: str | None = Field(None, description="40 (SHA-1) or 64 (SHA-256) hex digits")
    secondaryThumbprint: str | None = None


class AuthenticationMechanism(_Open):
    symmetricKey: SymmetricKey | None = None
    x509Thumbprint: X509Thumbprint | None = None
    type: Literal["sas", "selfSigned", "certificateAuthority", "none"] | None = Field(None, description="default sas")

    def columns(self, what: str) -> dict[str, Any]:
        """`{auth_type, primary_key, secondary_key, primary_thumbprint, secondary_thumbprint}` for the store.

        Raises:
            ApiError: 400 for type `none`, a key that is not base64 of 16+ bytes, or a bad thumbprint.
        """
        kind = self.type or "sas"
        if kind == "none":
            raise ApiError(400, f"{what}: authentication.type {kind!r} is not sas, selfSigned or certificateAuthority "
                                "(the stand-in does not mirror type 'none')", "authentication.type", "ArgumentInvalid")
        sym = self.symmetricKey or SymmetricKey()
        x509 = self.x509Thumbprint or X509Thumbprint()
        out: dict[str, Any] = {"auth_type": kind, "primary_key": None, "secondary_key": None, "primary_thumbprint": None,
                               "secondary_thumbprint": None}
        if kind == "sas":
            for k, col in (("primaryKey", "primary_key"), ("secondaryKey", "secondary_key")):
                value = getattr(sym, k)
                if value:
                    try:
                        if len(base64.b64decode(str(value), validate=True)) < 16:
                            raise ValueError("short")
                    except (binascii.Error, ValueError):
                        raise ApiError(400, f"{what}: authentication.symmetricKey.{k} must be base64 of 16 to 64 bytes",
                                       f"authentication.symmetricKey.{k}", "ArgumentInvalid") from None
                    out[col] = value
        elif kind == "selfSigned":
            for k, col in (("primaryThumbprint", "primary_thumbprint"), ("secondaryThumbprint", "secondary_thumbprint")):
                value = getattr(x509, k)
                if value:
                    if not THUMBPRINT_RE.match(str(value)):
                        raise ApiError(400, f"{what}: x509Thumbprint.{k} must be 40 (SHA-1) or 64 (SHA-256) hex digits",
                                       f"authentication.x509Thumbprint.{k}", "ArgumentInvalid")
                    out[col] = str(value).upper()
            if not out["primary_thumbprint"]:
                raise ApiError(400, f"{what}: self-signed X.509 authentication needs x509Thumbprint.primaryThumbprint",
                               "authentication.x509Thumbprint.primaryThumbprint", "ArgumentInvalid")
        return out


def auth_columns(auth: AuthenticationMechanism | None, what: str) -> dict[str, Any]:
    """The store's authentication columns of an identity body (SAS with generated keys when absent)."""
    return (auth or AuthenticationMechanism()).columns(what)


def auth_given(auth: AuthenticationMechanism | None) -> bool:
    """Whether a body carries an authentication object with anything in it (an update then replaces it)."""
    return auth is not None and bool(auth.model_fields_set)


class DeviceCapabilities(_Open):
    iotEdge: StrictBool | None = Field(None, description="an IoT Edge device (it gets $edgeAgent and $edgeHub)")


class DeviceIn(_Open):
    """`PUT /devices/{id}`: the SDK's `Device`."""

    deviceId: str | None = Field(None, description="must equal the URL's id when given")
    status: Literal["enabled", "disabled"] | None = None
    statusReason: str | None = None
    capabilities: DeviceCapabilities | None = None
    authentication: AuthenticationMechanism | None = None
    etag: str | None = None


class ModuleIn(_Open):
    """`PUT /devices/{id}/modules/{mid}`: the SDK's `Module`."""

    deviceId: str | None = Field(None, description="must equal the URL's device id when given")
    moduleId: str | None = Field(None, description="must equal the URL's module id when given")
    managedBy: str | None = None
    authentication: AuthenticationMechanism | None = None
    etag: str | None = None


class TwinProperties(_Open):
    desired: dict[str, Any] | None = None
    reported: dict[str, Any] | None = Field(None, description="ignored in a service write, as on IoT Hub")


class TwinIn(_Open):
    """`PUT`/`PATCH /twins/{id}[/modules/{mid}]`: the SDK's `Twin` (tags and desired properties)."""

    tags: dict[str, Any] | None = None
    properties: TwinProperties | None = None
    etag: str | None = None


class ConfigurationContentIn(_Open):
    """The SDK's `ConfigurationContent`; the stand-in mirrors IoT Edge deployments (`modulesContent`)."""

    modulesContent: dict[str, Any] | None = Field(None, description="$edgeAgent, $edgeHub and module twins' desired properties")
    deviceContent: dict[str, Any] | None = None
    moduleContent: dict[str, Any] | None = None


class ApplyConfigurationIn(_Open):
    """`POST /devices/{id}/applyConfigurationContent`."""

    modulesContent: dict[str, Any] = Field(description="$edgeAgent, $edgeHub and module twins' desired properties")


class ConfigurationMetricsIn(_Open):
    queries: dict[str, str] | None = Field(None, description="metric name -> IoT Hub query")


class ConfigurationIn(_Open):
    """`PUT /configurations/{id}`: the SDK's `Configuration` (an at-scale IoT Edge deployment)."""

    id: str | None = Field(None, description="must equal the URL's id when given")
    schemaVersion: str | None = None
    labels: dict[str, str] | None = None
    content: ConfigurationContentIn | None = None
    targetCondition: str = Field(description="e.g. tags.environment='prod', or * for every IoT Edge device")
    priority: StrictInt | None = Field(None, ge=0, description="higher wins; default 0")
    metrics: ConfigurationMetricsIn | None = None
    etag: str | None = None


class ConfigurationQueriesTestIn(_Open):
    """`POST /configurations/testQueries`: the SDK's `ConfigurationQueriesTestInput`."""

    targetCondition: str | None = None
    customMetricQueries: dict[str, str] | None = None


class QuerySpecification(_Open):
    """`POST /devices/query`: the SDK's `QuerySpecification`."""

    query: str = Field(description="SELECT ... FROM devices | devices.modules [WHERE ...] [GROUP BY ...]")


class CloudToDeviceMethod(_Open):
    """`POST /twins/{id}[/modules/{mid}]/methods`: the SDK's `CloudToDeviceMethod`."""

    methodName: str = Field(min_length=1)
    payload: Any = None
    responseTimeoutInSeconds: StrictInt | None = Field(None, ge=5, le=300, description="default 30")
    connectTimeoutInSeconds: StrictInt | None = Field(None, ge=0, le=300, description="default 0: fail at once when offline")
