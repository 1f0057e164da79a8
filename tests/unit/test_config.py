"""helpers.config: masked secrets, mask(), settings precedence, type errors."""
from __future__ import annotations

import logging
import pickle

import pytest

from helpers.config import MASK, Secret, load_settings, mask, mask_connection_string, parse_connection_string, settings_table
from helpers.errors import ConfigError

CS = "HostName=127.0.0.1:5000;DeviceId=cam-1;SharedAccessKey=c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5MTIzNA=="  # fake test key
SERVICE_CS = "HostName=127.0.0.1:5000;SharedAccessKeyName=iothubowner;SharedAccessKey=QUJDREVGR0hJSktMTU5PUA=="  # fake test key
API_KEY = "ei_deadbeefdeadbeefdeadbeefdeadbeef"  # fake test key


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No EDGELOOP_/EI_/IOTHUB_ variables, an empty settings file, cwd in tmp."""
    import os

    for name in list(os.environ):
        if name.startswith(("EDGELOOP_", "EI_", "IOTHUB_", "REGISTRY_")):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    monkeypatch.setenv("EDGELOOP_SETTINGS_FILE", str(empty))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_secret_hides_itself_everywhere(caplog):
    s = Secret(API_KEY, "EI_API_KEY")
    assert repr(s) == f"Secret(EI_API_KEY={MASK})"
    assert str(s) == MASK and f"{s}" == MASK and f"{s:>40}" == MASK and "%s" % s == MASK
    assert API_KEY not in repr([s, {"k": s}])
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key is %s", s)
    assert API_KEY not in caplog.text
    assert s.get_secret_value() == API_KEY
    assert Secret(s) == s and bool(Secret("")) is False
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_mask_connection_strings_tokens_and_keys():
    for text in (CS, SERVICE_CS):
        out = mask(text)
        assert "SharedAccessKey=" + MASK in out and text.split("SharedAccessKey=")[1] not in out
        assert out.startswith("HostName=127.0.0.1:5000;")
    assert mask_connection_string(Secret(CS)) == mask(CS)
    token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AbCdEfGhIjKlMnOpQrStUv%3D&se=123"
    assert "AbCdEfGh" not in mask(token)
    assert "AbCdEfGh" not in mask("GET /twins/d?sig=AbCdEfGhIjKlMnOpQrStUv%3D&se=1")
    assert API_KEY not in mask(f"curl -H 'x-api-key: {API_KEY}'")
    assert API_KEY not in mask(f"the key {API_KEY} leaked")
    assert mask("nothing secret here: apple banana") == "nothing secret here: apple banana"


def test_parse_connection_string():
    parts = parse_connection_string(Secret(CS))
    assert parts["DeviceId"] == "cam-1" and parts["HostName"] == "127.0.0.1:5000"
    assert parts["SharedAccessKey"].endswith("==")  # '=' inside a value survives
    with pytest.raises(ConfigError, match="HostName"):
        parse_connection_string("DeviceId=x;SharedAccessKey=y")
    with pytest.raises(ConfigError, match="has no '='"):
        parse_connection_string("HostName=h;garbage")


def test_defaults(clean_env):
    s = load_settings()
    assert s.hub_backend == "local" and s.studio_backend == "local" and s.torch_threads == 2
    assert isinstance(s.ei_api_key, Secret) and not s.ei_api_key
    assert s.source["hub_backend"] == "default"


def test_precedence_override_env_file_default(clean_env, monkeypatch):
    f = clean_env / "settings.env"
    f.write_text("# comment\nexport EDGELOOP_HUB=azure\nEDGELOOP_STUDIO='edgeimpulse'\nEI_API_KEY=\"%s\"\nEDGELOOP_CAMERA=folder\n" % API_KEY)
    monkeypatch.setenv("EDGELOOP_SETTINGS_FILE", str(f))
    monkeypatch.setenv("EDGELOOP_CAMERA", "webcam")
    s = load_settings(studio_backend="local")
    assert s.hub_backend == "azure" and s.source["hub_backend"].startswith("file")       # file > default
    assert s.camera == "webcam" and s.source["camera"] == "env EDGELOOP_CAMERA"          # env > file
    assert s.studio_backend == "local" and s.source["studio_backend"] == "argument"      # argument > file
    assert s.ei_api_key.get_secret_value() == API_KEY                                   # quotes stripped
    assert API_KEY not in repr(s)
    rows = dict((n, v) for n, v, _ in settings_table(s))
    assert rows["ei_api_key"] == "(set) " + MASK and rows["iothub_connection_string"] == "(not set)"


def test_workspace_argument_and_env(clean_env, monkeypatch):
    monkeypatch.setenv("EDGELOOP_WORKSPACE", str(clean_env / "from-env"))
    assert load_settings().workspace == (clean_env / "from-env").resolve()
    assert load_settings(workspace=clean_env / "arg").workspace == (clean_env / "arg").resolve()


def test_dotenv_in_cwd_is_read(clean_env, monkeypatch):
    monkeypatch.delenv("EDGELOOP_SETTINGS_FILE")
    (clean_env / ".env").write_text("EDGELOOP_IMAGE=my-image\n")
    assert load_settings().image_name == "my-image"


def test_bad_int_names_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("EDGELOOP_TORCH_THREADS", "four")
    with pytest.raises(ConfigError, match="EDGELOOP_TORCH_THREADS must be an integer"):
        load_settings()


def test_unknown_override_and_missing_file(clean_env, monkeypatch):
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(colour="red")
    monkeypatch.setenv("EDGELOOP_SETTINGS_FILE", str(clean_env / "nope.env"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_bad_settings_line(clean_env, monkeypatch):
    f = clean_env / "bad.env"
    f.write_text("JUSTAWORD\n")
    monkeypatch.setenv("EDGELOOP_SETTINGS_FILE", str(f))
    with pytest.raises(ConfigError, match="bad.env:1"):
        load_settings()


def test_require_names_the_variable(clean_env):
    with pytest.raises(ConfigError, match="EI_API_KEY is not set"):
        load_settings().require("ei_api_key")
