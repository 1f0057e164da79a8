"""What the local cloud's services share: persistence, the request context, errors, authentication, TLS.

The names below are this package's API for the services (`hub/`, `mqtt/`, `studio/`); the
modules inside `common/` import each other directly.
"""
from helpers.localcloud.common.auth import Principal, hub_principal, require_device_or_service, require_service
from helpers.localcloud.common.clock import iso, now_iso
from helpers.localcloud.common.context import Context, ctx_of, fsync_dir, json_body, service_key_from_cs, write_file_durable
from helpers.localcloud.common.db import Store, dumps, loads
from helpers.localcloud.common.errors import ApiError, error_from_service_error

__all__ = ["ApiError", "Context", "Principal", "Store", "ctx_of", "dumps", "error_from_service_error", "fsync_dir", "hub_principal",
           "iso", "json_body", "loads", "now_iso", "require_device_or_service", "require_service", "service_key_from_cs",
           "write_file_durable"]
