"""Run the six notebooks headless with papermill, in order, on one workspace, and summarise.

    python -m helpers.pipeline --profile smoke --workspace workspace/ci --out out/ci

Each notebook gets the profile's parameters (never a secret: papermill copies parameters into
the output notebook), runs with a per-cell timeout that scales with the work of its steps, and
is written to `--out`, signed (nbformat's notary, what `jupyter trust` does) so its widgets
render when opened. A `summary.json` collects per-notebook status and duration, every check the
notebooks made (`helpers.results.check`) and the key results they recorded. A notebook with a
false check is `failed`: the final table names the check and the run exits non-zero.

While it runs the terminal shows the notebook and step running, training and collection
progress and the elapsed time. Whatever happens, the local cloud and the simulated devices of
the workspace are stopped at the end.

- `profiles`: the notebooks, each profile's parameters, `--param` overrides, cell time limits
- `run`: the papermill run over one workspace (`run_pipeline`), `stop_everything`, `sign_notebook`
- `engine`: the papermill engine (quiet kernels, per-cell progress); `progress`: the terminal lines
- `summary`: per-notebook status and checks, summary.json, the final table
- `reference`: the reference runs nbval compares (`make notebooks`); `cli`: the command line
"""
from helpers.pipeline.cli import main
from helpers.pipeline.profiles import NOTEBOOKS, PROFILES, cell_timeout_for, parameters_for, parse_overrides
from helpers.pipeline.progress import Progress, step_titles
from helpers.pipeline.reference import REFERENCE_DIR, write_reference
from helpers.pipeline.run import run_pipeline, sign_notebook, stop_everything
from helpers.pipeline.summary import NotebookRun, Summary, format_table

__all__ = [
    "NOTEBOOKS", "PROFILES", "REFERENCE_DIR", "NotebookRun", "Progress", "Summary", "cell_timeout_for", "format_table",
    "main", "parameters_for", "parse_overrides", "run_pipeline", "sign_notebook", "step_titles", "stop_everything",
    "write_reference",
]
