"""Cloud-to-device messages through `azure-iot-hub`'s AMQP client, to Azure IoT Hub or the stand-in.

    from helpers.hub.c2d import C2DSender, send_c2d_message
    send_c2d_message(hub, "pi-1", '{"blink": 3}', {"contentType": "application/json"})
    with C2DSender(hub) as sender:                   # one connection for many messages
        sender.send("pi-2", "stop")

The message goes the way `IoTHubRegistryManager.send_c2d_message` sends it (the SDK's
`IoTHubAmqpClientSharedAccessKeyAuth`: AMQP over TLS on port 5671 of the hub's host, a service SAS
token on `$cbs`, `/messages/devicebound`); the one difference for the stand-in is the CA file,
set on this SDK client's own TLS settings (uamqp otherwise trusts certifi's CAs only), never
process-wide. The device receives it with `azure-iot-device` (`on_message_received`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.config import Secret, parse_connection_string
from helpers.errors import ConfigError, ServiceError


class C2DSender:
    """One AMQP connection to the hub for cloud-to-device messages (close it, or use `with`).

    Opening costs a TLS handshake and a CBS token (~0.1 s), closing uamqp's connection ~0.8 s:
    a caller sending many messages keeps one sender.

    Args:
        hub: an `IoTHub` (its service connection string and CA file are used), or None with
            `connection_string` (and `ca_file` for the stand-in).

    Raises:
        ConfigError: neither a hub nor a service connection string is given.
    """

    def __init__(self, hub: Any = None, *, connection_string: str | Secret | None = None,
                 ca_file: str | Path | None = None):
        # the SDK and uamqp are imported here: a second to import, and only this client needs them
        from azure.iot.hub.iothub_amqp_client import IoTHubAmqpClientSharedAccessKeyAuth
        from uamqp import TransportType

        if hub is not None:
            connection_string, ca_file = hub.connection_string_service, hub.ca_file
        if connection_string is None:
            raise ConfigError("a cloud-to-device sender needs a hub client or the hub's service connection string "
                              "(IOTHUB_CONNECTION_STRING)")
        parts = parse_connection_string(connection_string if isinstance(connection_string, Secret)
                                        else Secret(str(connection_string), "connection_string"))
        if not parts.get("SharedAccessKeyName") or not parts.get("SharedAccessKey"):
            raise ConfigError("a cloud-to-device sender needs the hub's service connection string "
                              "(SharedAccessKeyName=iothubowner), not a device's")
        self.host = parts["HostName"]
        self._client = IoTHubAmqpClientSharedAccessKeyAuth(self.host, parts["SharedAccessKeyName"], parts["SharedAccessKey"])
        if ca_file is not None:
            auth = getattr(self._client.amqp_client, "_auth", None)
            if auth is None or not hasattr(auth, "set_io"):
                self._client.disconnect_sync()
                raise ConfigError("uamqp's SendClient changed shape: pin uamqp==1.6.11 and azure-iot-hub==2.7.0 "
                                  "(pyproject.toml)")
            auth.cert_file = str(ca_file)
            auth.set_io(auth.hostname, None, None, TransportType.Amqp)  # the TLS layer again, trusting this CA

    def send(self, device_id: str, body: str | bytes, properties: dict[str, str] | None = None) -> None:
        """Send one message; IoT Hub queues it until the device receives it.

        Args:
            properties: application properties, and `messageId`, `correlationId`, `contentType`,
                `contentEncoding`, `expiryTimeUtc` (epoch milliseconds), as the SDK takes them.

        Raises:
            ServiceError: the hub refused the message (no such device, 50 messages wait already, over
                64 KB, expired), or it could not be reached.
        """
        from uamqp.errors import AMQPConnectionError, AuthenticationException

        try:
            self._client.send_message_to_device(device_id, body, dict(properties or {}))
        except (AuthenticationException, AMQPConnectionError, TimeoutError) as exc:
            raise ServiceError(f"cannot send a cloud-to-device message to {device_id!r} on {self.host} ({exc}): check "
                               "the service connection string, the CA file, and that port 5671 of the hub's host is "
                               "reachable") from None
        except Exception as exc:  # noqa: BLE001 - the SDK signals a rejected message with a bare Exception, nothing narrower
            if type(exc) is not Exception:
                raise
            raise ServiceError(f"the hub refused the cloud-to-device message to {device_id!r}: the device is not "
                               "registered, 50 messages wait for it already (it must connect and receive them), the "
                               "message is over 64 KB, or it expired") from None

    def close(self) -> None:
        self._client.disconnect_sync()

    def __enter__(self) -> C2DSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def send_c2d_message(hub: Any, device_id: str, body: str | bytes, properties: dict[str, str] | None = None, *,
                     connection_string: str | Secret | None = None, ca_file: str | Path | None = None) -> None:
    """Send one cloud-to-device message on a connection of its own (`C2DSender` for many)."""
    with C2DSender(hub, connection_string=connection_string, ca_file=ca_file) as sender:
        sender.send(device_id, body, properties)


__all__ = ["C2DSender", "send_c2d_message"]
