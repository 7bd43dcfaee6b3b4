"""Property-based fuzzing of the OpenAPI schema against the real server: no 5xx, no schema violation.

Runs the schemathesis CLI (its pytest plugin does not support this pytest) with a bounded number
of examples per operation, deterministic generation, and a hard timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.live_server import LiveServer

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_openapi_contract_holds_under_fuzzing(live: LiveServer) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{live.url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "Unresolvable references" not in report, report[-3000:]
    assert " passed" in report
