"""A schema fuzz run with schemathesis against the real server: every check on, bounded in
examples and time; any finding fails the build.

Schema-valid requests may be refused only for what no JSON schema can say (see
``schema_hooks.py``); schema-violating ones must be refused with a documented 4xx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.realserver import running

CONFIG = """
[checks]
enabled = true

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "404", "413", "422"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "406", "413", "415", "422"]
"""

MAX_SECONDS = 100


def test_schemathesis_finds_nothing(tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    root = Path(__file__).resolve().parents[2]
    with running({"EXPLAIN_SCORECAM_MAX_CHANNELS": "8"}) as server:
        result = subprocess.run(
            [
                command,
                "--config-file",
                str(config),
                "run",
                f"{server.base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "15",
                "--max-time",
                str(MAX_SECONDS),
                "--workers",
                "1",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=MAX_SECONDS + 120,
            cwd=tmp_path,  # its cache is written there, not into the checkout
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.service.schema_hooks",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(root), os.environ.get("PYTHONPATH")])
                ),
            },
        )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "generated" in summary and "failures" not in summary.split("Test cases:")[-1], summary
