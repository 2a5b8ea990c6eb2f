"""promtool checks the shipped alerting rules and runs their unit tests on recorded series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from integration.conftest import DOCS

RULES = DOCS / "prometheus-alerts.yml"
RULE_TESTS = DOCS / "prometheus-alerts.test.yml"


def promtool(binary: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rules_are_valid(promtool_binary: str) -> None:
    run = promtool(promtool_binary, "check", "rules", RULES)

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == f"Checking {RULES}\n  SUCCESS: 3 rules found\n\n"


def test_the_rules_pass_their_unit_tests(promtool_binary: str) -> None:
    run = promtool(promtool_binary, "test", "rules", RULE_TESTS)

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == f"Unit Testing:  {RULE_TESTS}\n  SUCCESS\n\n"


def test_the_unit_tests_catch_a_wrong_rule(promtool_binary: str, tmp_path: Path) -> None:
    # The flapping rule as first drafted, `> 3`: increase() reads 3 openings as 3.25 between
    # two samples, and the tests must say so.
    shutil.copy(RULE_TESTS, tmp_path)
    rules = RULES.read_text()
    assert rules.count(") >= 4\n") == 1
    (tmp_path / RULES.name).write_text(rules.replace(") >= 4\n", ") > 3\n"))

    run = promtool(promtool_binary, "test", "rules", tmp_path / RULE_TESTS.name)

    assert run.returncode == 1
    assert "alertname: CircuitBreakerFlapping, time: 6m30s," in run.stderr
    assert 'name="Billing"' in run.stderr
