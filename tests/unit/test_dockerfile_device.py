"""Dockerfile.device and .dockerignore, checked as text (no engine needed), and the device
import path kept free of the training / service stack."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from helpers.config import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile.device").read_text()
DOCKERIGNORE = (REPO_ROOT / ".dockerignore").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        buf += " " + line.rstrip("\\").strip() if buf else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_base_image_is_an_argument_defaulting_to_multiarch_python_slim():
    ins = instructions()
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")  # before FROM: usable in it
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    # the same default as helpers.images uses for real users
    from helpers.images import OFFICIAL_BASE

    assert OFFICIAL_BASE == "python:3.11-slim"


def test_pip_installs_into_a_venv_that_is_on_path():
    runs = [a for i, a in instructions() if i == "RUN" and "pip install" in a]
    assert len(runs) == 1 and runs[0].startswith("python3 -m venv /opt/venv")
    env = " ".join(a for i, a in instructions() if i == "ENV")
    assert "PATH=/opt/venv/bin:" in env and "VIRTUAL_ENV=/opt/venv" in env


def test_installs_exactly_the_device_extra():
    device = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["device"]
    runs = " ".join(a for i, a in instructions() if i == "RUN" and "pip install" in a)
    pins = set(re.findall(r"([A-Za-z0-9_.-]+==[0-9][^\s]*)", runs))
    assert pins == set(device)
    assert not re.search(r"\b(torch|torchvision|fastapi|uvicorn|jupyter\w*)\b", runs)


def test_copies_only_helpers_and_start_sh():
    copies = [a for i, a in instructions() if i in ("COPY", "ADD")]
    assert [c.split()[0] for c in copies] == ["helpers/", "start.sh"]
    assert not any(i == "ADD" for i, _ in instructions())


def test_non_root_port_healthcheck_entrypoint():
    ins = instructions()
    users = [a for i, a in ins if i == "USER"]
    # numeric, so an agent can hand the module folder to that uid; never root
    assert users and re.fullmatch(r"[1-9][0-9]*:[0-9]+", users[-1]), users
    assert ("EXPOSE", "4912") in ins
    health = [a for i, a in ins if i == "HEALTHCHECK"]
    assert len(health) == 1 and "helpers.device.module" in health[0] and "--healthcheck" in health[0]
    assert "curl" not in health[0] and "wget" not in health[0]
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/app/start.sh"]


def test_no_secret_in_any_layer():
    secretish = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION", re.IGNORECASE)
    for ins, args in instructions():
        if ins in ("ARG", "ENV", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not any(secretish.search(n) for n in names), f"{ins} {args}"
    assert "EI_API_KEY=" not in DOCKERFILE and "SharedAccessKey" not in DOCKERFILE


def test_dockerignore_keeps_secrets_and_state_out():
    lines = [l.strip() for l in DOCKERIGNORE.splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "**"  # deny by default, then allow what the image copies
    assert {"!helpers", "!start.sh"} <= set(lines)
    for needed in (".env", ".venv/", "workspace/", "notebooks/", "tests/", ".git/"):
        assert needed in lines, needed
    assert not any(l.startswith("!") and l not in ("!helpers", "!start.sh") for l in lines)


DEVICE_MODULES = [
    "helpers.device.module", "helpers.device.module_client", "helpers.device.agent", "helpers.device.runtime", "helpers.device.spool",
    "helpers.device.collector", "helpers.device.runner", "helpers.device.fleet", "helpers.device.camera",
    "helpers.inference.loader", "helpers.config", "helpers.studio.ingestion", "helpers.device.hub_link",
    "helpers.protocol.manifest", "helpers.frames", "helpers.sim.camera", "helpers.containers.engine",
]


def test_device_import_path_has_no_heavy_stack():
    """What the device image runs must import without torch, fastapi, docker or jupyter."""
    code = (
        "import sys, importlib\n"
        f"for m in {DEVICE_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'torchvision', 'fastapi', 'uvicorn', 'starlette', 'docker', 'azure', 'ipywidgets', 'matplotlib', 'pandas'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"device modules pull in {r.stdout.strip()}"
    # -X importtime lines: "import time: self [us] | cumulative | imported package"
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "fastapi" not in imported
