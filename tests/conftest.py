"""Shared pytest fixtures: the real local cloud, started in a temporary workspace.

Fixtures (names are stable; other test modules rely on them):

- ``cloud`` (session scope): one running local cloud for the whole test session. Yields a
  ``CloudHandle`` with ``.workspace`` (Path), ``.url`` (str), ``.pid`` (int), ``.hub``
  (``LocalHub``), ``.studio`` (``get_studio("local")``: ``EdgeImpulseStudio`` on the official
  Edge Impulse clients) and ``.info`` (the status dict). Shared by
  every test: use unique device ids / deployment names / image bytes (``unique_name``
  helps) and do not stop it.
- ``fresh_cloud`` (function scope): a new, empty local cloud in its own workspace for
  destructive tests (kill -9, restarts, stop). Stopped (SIGTERM, by pid) at the end.
- ``unique_name`` (function scope): a callable ``unique_name(prefix) -> str`` of short ids.
- ``make_jpeg`` (session scope): ``make_jpeg(seed=0, size=(64, 48)) -> bytes``, a small valid
  JPEG whose content (hence sha256) differs per seed.

Every service a fixture starts is stopped by pid; nothing is left running.
"""
from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# `make test` runs the files on parallel pytest-xdist workers, so every training and inference
# shares the cores with other tests. Two torch threads on a busy machine wait for each other at
# every parallel region: measured here (2 cores), `python -m helpers.train` at 96 px took 67 s with
# 2 threads beside two busy processes and 17 s with 1 (10 s with 2 on an idle machine), and in the
# suite 184-240 s. One thread per process, unless the caller set a count; subprocesses, papermill
# kernels and the JupyterLab of the browser tests inherit it.
os.environ.setdefault("EDGELOOP_TORCH_THREADS", "1")


@dataclass
class CloudHandle:
    """A running local cloud and clients for it."""

    workspace: Path
    url: str
    pid: int
    hub: Any
    studio: Any
    info: dict[str, Any] = field(default_factory=dict)

    def refresh(self) -> CloudHandle:
        """Re-read service.json (after a restart) and rebuild the clients."""
        from helpers.hub.local import LocalHub
        from helpers.localcloud import status
        from helpers.studio import get_studio

        self.info = status(self.workspace)
        self.url, self.pid = self.info["url"], self.info["pid"]
        self.hub, self.studio = LocalHub(self.workspace), get_studio("local", workspace=self.workspace)
        return self


def _start(workspace: Path, **kw: Any) -> CloudHandle:
    from helpers.hub.local import LocalHub
    from helpers.localcloud import ensure_running
    from helpers.studio import get_studio

    info = ensure_running(workspace, **kw)
    return CloudHandle(workspace=workspace, url=info["url"], pid=info["pid"], hub=LocalHub(workspace),
                       studio=get_studio("local", workspace=workspace), info=info)


def _stop(handle: CloudHandle) -> None:
    from helpers.localcloud import stop

    stop(handle.workspace)


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudHandle]:
    """The shared local cloud (session scope)."""
    handle = _start(tmp_path_factory.mktemp("cloud-ws"))
    try:
        yield handle
    finally:
        _stop(handle)


@pytest.fixture()
def fresh_cloud(tmp_path: Path) -> Iterator[CloudHandle]:
    """A new local cloud in its own workspace, for destructive tests (function scope)."""
    handle = _start(tmp_path / "ws")
    try:
        yield handle
    finally:
        _stop(handle)


_counter = itertools.count()


@pytest.fixture()
def unique_name() -> Callable[[str], str]:
    """`unique_name("dev") -> "dev-3f2a9c-7"`: ids that do not collide in the shared cloud."""
    tag = uuid.uuid4().hex[:6]
    return lambda prefix="x": f"{prefix}-{tag}-{next(_counter)}"


@pytest.fixture(scope="session")
def make_jpeg() -> Callable[..., bytes]:
    """A small valid JPEG, different content per `seed`."""
    import cv2
    import numpy as np

    salt = int.from_bytes(os.urandom(4), "little")

    def _make(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
        rng = np.random.default_rng([salt, seed])
        img = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        return buf.tobytes()

    return _make


# ---------------------------------------------------------------------------------------------
# How `make test` spreads the suite over its workers (pytest-xdist `--dist loadfile`,
# `--no-loadscope-reorder`, the scheduler below). Each file is one unit of work (its tests and
# module fixtures share a worker); STORY_UNITS joins files into one serial unit. The whole-story
# runs execute the six notebooks (training twice) and keep both cores busy; four of them at once on
# four workers slowed every one ~3x (17 tests done after 12 minutes), so there are two now: the
# browser walkthrough, and the papermill smoke run, whose executed notebooks nbval's comparison
# reuses (nbval re-executed all six before: a third story), followed on its worker by the run that
# must fail at 04. They start first, then the longest files, while the other workers take the rest.
# Clean clone, 2 cores, 4 workers: pytest 1207 s with three stories in two units; 1095 s with
# nbval comparing the smoke run (walkthrough 839 s, smoke run 797 s: alone ~400 s and ~380 s);
# 1170 s with the failing run started beside the two stories (walkthrough 918 s); with lighter
# process imports (jsonschema without rfc3987-syntax) 970 s and 786 s (2083 and 1682 CPU-s: the
# machine's own speed varies that much between runs of the same code); 617 s (1295 CPU-s) with the
# walkthrough training on one thread and cheaper weight averaging. The suite is CPU-bound: the
# cores were 94 % busy over `make test` (2472 CPU-s in 1305 s), so the order moves
# the end by tens of seconds at most; only less work shortens it.
STORY_UNITS = {
    "tests/integration/test_walkthrough_browser.py": "story-1",
    "tests/notebooks/test_pipeline.py": "story-2",
    "tests/notebooks/test_pipeline_weak_training.py": "story-2",
}
# then these files first, the longest before the others (the rest keep their order)
LONGEST_FIRST = (
    "tests/integration/test_container_runtime.py",
    "tests/notebooks/test_nbval.py",
    "tests/integration/test_localcloud_service.py",
    "tests/integration/test_observe_telemetry.py",
    "tests/integration/test_eventhub_consumer_groups.py",
    "tests/integration/test_lab_widgets_browser.py",
    "tests/integration/test_lab_labeling_browser.py",
    "tests/integration/test_c2d_messages.py",
    "tests/integration/test_drill_models.py",
    "tests/integration/test_train_cli.py",
)


def _unit_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return STORY_UNITS.get(path, path)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    units = sorted(set(STORY_UNITS.values()))
    rank = {unit: i for i, unit in enumerate(units)}
    rank.update({name: len(units) + i for i, name in enumerate(LONGEST_FIRST)})
    items.sort(key=lambda item: rank.get(_unit_of(item.nodeid), len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's file scheduling, with the story files joined into their units (`make test`
    passes --no-loadscope-reorder, else xdist would sort the units by their number of tests)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class StoryUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit_of(nodeid)

    return StoryUnits(config, log)


# Nothing the suite starts outlives it. Every process a test starts inherits this marker in its
# environment (local clouds, agents, modules, podman's service, the registry, JupyterLab...); at the
# end of the session any process still carrying it is named, stopped (SIGTERM, then SIGKILL, by
# pid) and the run fails, so a fixture that forgets to stop what it started is caught where it
# happens instead of on the next machine. A nested pytest (nbval's) inherits the marker and
# leaves the check to the outer session.
LEAK_MARKER = "EDGELOOP_TEST_SESSION"


def _iter_marked(marker: str) -> Iterator[tuple[Path, list[bytes], str]]:
    """(/proc/PID, its environment, its stat line) of every other process carrying the session marker."""
    needle = f"{LEAK_MARKER}={marker}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            if needle in env:
                yield d, env, (d / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read


def _marked_processes(marker: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for d, _, stat in _iter_marked(marker):
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue  # a zombie holds nothing; its parent reaps it
        try:
            out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get(LEAK_MARKER) or not Path("/proc/self/environ").exists():
        return
    marker = uuid.uuid4().hex
    os.environ[LEAK_MARKER] = marker
    session.config.stash[_LEAK_KEY] = marker
    _start_cpu_sampler(session.config, marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    # A wrapper, so the check runs after every other plugin's sessionfinish: with pytest-xdist
    # (`-n`), after the workers are torn down. Workers inherit the controller's marker and skip
    # the check (pytest_sessionstart), the controller checks them all.
    yield
    _stop_leftovers(session)


def _stop_leftovers(session: pytest.Session) -> None:
    import signal
    import time

    marker = session.config.stash.get(_LEAK_KEY, None)
    if marker is None:
        return
    left = _marked_processes(marker)
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:  # processes a fixture just signalled get a moment to exit
        time.sleep(0.5)
        left = _marked_processes(marker)
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(3)
    for pid in _marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = "\n".join(f"  pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
    session.config.get_terminal_writer().line(
        f"\nprocesses the test session started were still running at its end (now stopped):\n{lines}\n"
        "stop them in the fixture or test that starts them", red=True)
    session.exitstatus = 1


_LEAK_KEY = pytest.StashKey[str]()


# ---------------------------------------------------------------------------------------------
# Where the suite's CPU goes, per test file (`bench/bench_suite.py` sets EDGELOOP_CPU_PROFILE to a
# folder; off otherwise). The suite is CPU-bound, so this, not the wall time of a test that waited
# on others, says which work to cut. Two parts, both written as JSON lines into the folder:
# - each worker's own CPU and its waited-for children's (`resource.getrusage`) over each test, by file;
# - every process the tests start (they carry the session marker, and the file that started them in
#   EDGELOOP_TEST_FILE, which the worker sets before each test): the controller samples their
#   /proc/PID/stat CPU (its own and its waited-for children's) once a second and books each one's
#   last reading to that file; one that ended while its parent lived on is left to the parent's
#   children time. A process left to init (podman's containers) is counted only while sampled.
CPU_PROFILE = "EDGELOOP_CPU_PROFILE"
TEST_FILE_VAR = "EDGELOOP_TEST_FILE"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    folder = os.environ.get(CPU_PROFILE)
    if not folder:
        yield
        return
    import json
    import resource
    import time

    path = item.nodeid.split("::", 1)[0]
    os.environ[TEST_FILE_VAR] = path

    def used() -> float:  # this worker's CPU and that of the children it has waited for
        return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))

    before, t0 = used(), time.monotonic()
    yield
    cpu = used() - before
    rec = {"file": path, "test": item.nodeid, "own_cpu_s": round(cpu, 2), "wall_s": round(time.monotonic() - t0, 2)}
    with open(Path(folder) / f"worker-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def _sample_started_processes(marker: str, folder: Path, stop: Any) -> None:
    """Controller thread: the CPU of every marked process, booked to the test file that started it;
    samples once a second until `stop` is set, then writes started.json."""
    import json

    hz, me = os.sysconf("SC_CLK_TCK"), os.getpid()
    file_key = f"{TEST_FILE_VAR}=".encode()
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    workers: set[int] = set()
    tick = 0
    while not stop.wait(1.0):
        tick += 1
        for d, env, stat in _iter_marked(marker):
            fields = stat.rsplit(")", 1)[1].split()
            pid, ppid = int(d.name), int(fields[1])
            if ppid == me:
                workers.add(pid)
                continue  # the xdist workers book their own CPU per test
            owner = next((e[len(file_key):].decode(errors="replace") for e in env if e.startswith(file_key)), "(controller)")
            # utime + stime, and cutime + cstime: the children it has waited for (short-lived ones the
            # one-second samples miss are counted there)
            seen[(pid, fields[19])] = {"file": owner, "process": stat[stat.index("(") + 1:stat.rindex(")")],
                                       "ppid": ppid, "last": tick,
                                       "cpu": (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / hz}
    last_of = {pid: rec["last"] for (pid, _), rec in seen.items()}
    rows = []
    for rec in seen.values():
        # one that ended while its parent lived on was (most likely) waited for: its CPU is in the
        # parent's children time, or, for a worker's child, in the worker's per-test record
        if rec["last"] < tick and (rec["ppid"] in workers or last_of.get(rec["ppid"], 0) > rec["last"]):
            continue
        rows.append({"file": rec["file"], "cpu_s": round(rec["cpu"], 2), "process": rec["process"]})
    (folder / "started.json").write_text(json.dumps(rows))


def _start_cpu_sampler(config: pytest.Config, marker: str) -> None:
    folder = os.environ.get(CPU_PROFILE)
    if not folder:
        return
    import threading

    Path(folder).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    thread = threading.Thread(target=_sample_started_processes, args=(marker, Path(folder), stop), daemon=True,
                              name="cpu-profile")
    thread.start()
    config.stash[_CPU_STOP_KEY] = (stop, thread)


def pytest_unconfigure(config: pytest.Config) -> None:
    pair = config.stash.get(_CPU_STOP_KEY, None)
    if pair is not None:
        pair[0].set()
        pair[1].join(timeout=30)  # it writes started.json once, after its last sample


_CPU_STOP_KEY = pytest.StashKey[Any]()
