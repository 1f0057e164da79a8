"""SAS tokens: Azure's exact format and signature, verification, expiry."""
from __future__ import annotations

import base64
from urllib.parse import parse_qs, quote_plus

import pytest

from helpers.config import Secret, mask
from helpers.errors import Unauthorized
from helpers.protocol.sas import generate_sas_token, new_key, parse_sas_token, verify_sas_token

KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.mark.parametrize("policy", [None, "iothubowner"])
def test_token_is_the_azure_iot_hub_sdks_token(policy):
    """Same resource, key, policy and expiry: our token and the SDK's own `SasToken` are the same."""
    from azure.iot.hub.sastoken import SasToken

    uri = "myhub.azure-devices.net/devices/dev1"
    sdk = SasToken(uri, KEY, policy, ttl=3600)
    ours = generate_sas_token(uri, KEY, policy, ttl_s=3600, now=sdk.expiry_time - 3600)
    assert isinstance(ours, Secret) and str(ours) == "********"
    value = ours.get_secret_value()
    assert value.startswith("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=")
    # The SDK quotes the signature with `quote`, we with `quote_plus`: compare decoded fields.
    assert parse_qs(value.split(" ", 1)[1]) == parse_qs(str(sdk).split(" ", 1)[1])
    assert ("skn" in parse_qs(value.split(" ", 1)[1])) == (policy is not None)


def test_tokens_the_sdks_make_verify():
    """Tokens made by azure-iot-hub (service) and azure-iot-device (device) pass our verification."""
    from azure.iot.device.common.auth.sastoken import RenewableSasToken
    from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
    from azure.iot.hub.sastoken import SasToken

    service = SasToken("127.0.0.1:1234", KEY, "iothubowner", ttl=600)
    parsed = verify_sas_token(str(service), [KEY], now=service.expiry_time - 1)
    assert parsed.skn == "iothubowner" and parsed.sr == "127.0.0.1:1234"
    device = RenewableSasToken("127.0.0.1:1234/devices/pi-1", SymmetricKeySigningMechanism(KEY), ttl=600)
    assert verify_sas_token(str(device), [KEY], now=device.expiry_time - 1).sr == "127.0.0.1:1234/devices/pi-1"
    with pytest.raises(Unauthorized, match="signature does not match"):
        verify_sas_token(str(device), [new_key()], now=device.expiry_time - 1)


def test_service_token_has_policy_and_verifies():
    token = generate_sas_token("127.0.0.1:1234", KEY, "iothubowner", now=1000)
    parsed = verify_sas_token(token, [KEY], now=1001)
    assert parsed.skn == "iothubowner" and parsed.sr == "127.0.0.1:1234" and parsed.se == 4600


def test_wrong_key_and_secondary_key():
    other = new_key()
    token = generate_sas_token("h/devices/d", other, now=0)
    with pytest.raises(Unauthorized, match="signature does not match"):
        verify_sas_token(token, [KEY], now=1)
    assert verify_sas_token(token, [KEY, other], now=1).sr == "h/devices/d"


def test_expired_token():
    token = generate_sas_token("h", KEY, ttl_s=10, now=100)
    with pytest.raises(Unauthorized, match="expired"):
        verify_sas_token(token, [KEY], now=200)


@pytest.mark.parametrize("bad", ["Bearer abc", "SharedAccessSignature sr=h&se=1", "SharedAccessSignature sr=h&sig=x&se=soon"])
def test_malformed_tokens(bad):
    with pytest.raises(Unauthorized) as exc:
        parse_sas_token(bad)
    assert exc.value.status == 401 and exc.value.field == "Authorization"


def test_tampered_resource_fails():
    value = generate_sas_token("h/devices/a", KEY, now=0).get_secret_value().replace("devices%2Fa", "devices%2Fb")
    with pytest.raises(Unauthorized):
        verify_sas_token(value, [KEY], now=1)


def test_token_text_is_masked():
    value = generate_sas_token("h/devices/a", KEY).get_secret_value()
    sig = parse_qs(value.split(" ", 1)[1])["sig"][0]
    assert quote_plus(sig) not in mask(f"GET /x?auth={value}") and "********" in mask(value)


def test_new_key_is_random_base64():
    a, b = new_key(), new_key()
    assert a != b and len(base64.b64decode(a)) == 32
