"""On a failing deployment test, attach what the nginx instances it used logged."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from deploy_helpers import NGINX_PREFIXES, nginx_diagnostics


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and NGINX_PREFIXES:
        for prefix in NGINX_PREFIXES[-3:]:
            report.sections.append((f"nginx {prefix}", nginx_diagnostics(prefix)))
    return report
