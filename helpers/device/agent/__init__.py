"""The edge agent: what Azure IoT Edge's edgeAgent does, for one (simulated or real) device.

Run it as::

    IOTEDGE_CONNECTION_STRING='HostName=...;DeviceId=cam-01;SharedAccessKey=...' \\
        python -m helpers.device.agent --workdir workspace/devices/cam-01 [--runtime process|docker] \\
            [--ca-file HUB_CA.pem [--rest-url https://HOST:PORT]]

(`--connection-string` works too, but the environment keeps the key out of `ps`.) The device knows
its hub by that connection string and a CA file: against the local stand-in `--ca-file` is its CA
and `--rest-url` its REST address (`helpers.device.fleet` passes both for simulated devices);
against Azure IoT Hub the system's CAs and `https://HostName` are used.

With the device's connection string it does what IoT Edge's runtime does, with the same SDK and
hub APIs, so it runs against the local stand-in and a real Azure IoT Hub alike:

  1. it connects as the device's `$edgeAgent` module with `azure-iot-device`'s
     `IoTHubModuleClient` (MQTT over TLS), reads the deployment from that module twin's
     desired properties (`modules`, `runtime`, `systemModules`, `schemaVersion`) and applies
     every desired-property patch the hub pushes: modules that are new start, modules whose
     image, createOptions, env or version changed are replaced, modules no longer listed stop,
     `status: stopped` stops a module; an invalid deployment is refused (400) and what runs
     keeps running;
  2. it supervises what runs: a module that exits is restarted per its `restartPolicy`
     (`always`; `on-failure` and `on-unhealthy` on a non-zero exit; `never`) after an
     exponential backoff (1 s doubling to `backoff_max_s`, reset once the module has run
     `stable_after_s`); a runner that keeps answering 503 on `/api/health` counts as unhealthy;
  3. it reports in the reported-properties schema of Azure's edgeAgent: `schemaVersion`,
     `version`, `lastDesiredStatus` (200 applied, 400 invalid, 417 no deployment, 500 a module
     could not be started), `lastDesiredVersion` (the desired `$version` it applied),
     `runtime`, `systemModules` and per module `runtimeStatus`, `status`, `restartPolicy`,
     `version`, `exitCode`, `statusDescription`, `restartCount`, `lastStartTimeUtc`,
     `lastExitTimeUtc`, `lastRestartTimeUtc`, `type`, `settings.image`, plus `hostPort` (the
     host port standing for container port 4912 on a simulated device);
  4. it answers edgeAgent's direct methods `ping`, `RestartModule` and `GetModuleLogs`
     (`tail`, `since`, `until`, `regex`);
  5. it gives each module the environment of the IoT Edge simulator, `EdgeHubConnectionString`
     (the module's own identity, created `managedBy: IotEdge` through the device-scoped
     registry API when missing) and `EdgeModuleCACertificateFile`, so the module's
     `IoTHubModuleClient.create_from_edge_environment()` connects as on a real device.

When the hub cannot be reached, modules keep running and the SDK reconnects; reports wait and
are sent (only what changed) once the hub acknowledges again; after a reconnection the agent
reads the whole twin, so a deployment changed meanwhile is applied. SIGTERM or SIGINT stops
every module (SIGTERM to each process group, then SIGKILL after `stop_timeout_s`), reports,
and the agent exits 0.

Files in the workdir: `agent.json` (this agent's pid and its modules' pids, so a later agent
or `helpers.device.fleet` can clean up after a crash; a module started but not yet recorded when
the agent was killed is found by its `MODULE_WORKDIR` and stopped too, so none runs twice),
`scene.json` (the synthetic camera's scene), `modules/<name>/` (each module's `MODULE_WORKDIR`,
with `module.log`).

The package, by job: `core` (the loop: twin sync, reconcile), `supervise` (start, stop, restart
policies and backoff, health probes), `methods` (direct methods), `logs` (GetModuleLogs'
filtering), `report` (the reported properties), `state` (settings, module state), `cli`.
"""
from helpers.device.agent.cli import main
from helpers.device.agent.core import EdgeAgent
from helpers.device.agent.state import AgentConfig, ModuleState

__all__ = ["AgentConfig", "EdgeAgent", "ModuleState", "main"]
