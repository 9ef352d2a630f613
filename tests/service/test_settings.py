"""Settings come from the environment, and the README documents every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("EXPLAIN_MODELS", " efficientnet_lite0 , alexnet:none,")
    monkeypatch.setenv("EXPLAIN_MAX_BATCH_SIZE", "4")
    settings = Settings()
    assert settings.models == ["efficientnet_lite0", "alexnet:none"]
    assert settings.max_batch_size == 4


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("EXPLAIN_MODELS", " , ")
    with pytest.raises(ValidationError, match="at least one model spec"):
        Settings()
    monkeypatch.delenv("EXPLAIN_MODELS")
    monkeypatch.setenv("EXPLAIN_QUEUE_SIZE", "0")
    with pytest.raises(ValidationError, match="queue_size"):
        Settings()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_readme_documents_every_setting(field):
    variable = f"`EXPLAIN_{field.upper()}`"
    assert variable in README, f"README.md's configuration table lacks {variable}"


@pytest.mark.parametrize(
    ("cores", "batch", "torch_", "plan"),
    [
        (2, 0, 0, (2, 1)),
        (1, 0, 0, (1, 1)),
        (16, 0, 0, (2, 8)),
        (16, 4, 0, (4, 4)),
        (16, 0, 3, (2, 3)),
        (2, 1, 0, (1, 2)),
    ],
)
def test_thread_plan_fills_in_automatic_values(monkeypatch, cores, batch, torch_, plan):
    monkeypatch.setattr("service.settings.available_cores", lambda: cores)
    settings = Settings(batch_threads=batch, torch_threads=torch_)
    assert settings.thread_plan() == plan


@pytest.mark.parametrize("path", ["docker-compose.yml", "Dockerfile"])
def test_container_files_name_only_real_settings(path):
    import re

    text = (Path(__file__).resolve().parents[2] / path).read_text(encoding="utf-8")
    named = set(re.findall(r"\bEXPLAIN_([A-Z_]+)\b", text)) - {"PUBLISH"}  # PUBLISH: compose's own
    assert named, f"{path} configures nothing"
    unknown = {name for name in named if name.lower() not in Settings.model_fields}
    assert not unknown, f"{path} sets variables the service does not read: {sorted(unknown)}"


def test_compose_waits_longer_than_the_shutdown_deadline():
    import re

    field = Settings.model_fields.get("shutdown_timeout_s")
    if field is None:
        pytest.skip("the service has no shutdown deadline setting (EXPLAIN_SHUTDOWN_TIMEOUT_S)")
    text = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text(encoding="utf-8")
    grace = re.search(r"^\s*stop_grace_period:\s*(\d+)s\s*$", text, re.M)
    assert grace, "docker-compose.yml sets no stop_grace_period in seconds"
    configured = re.search(
        r"EXPLAIN_SHUTDOWN_TIMEOUT_S:\s*\$\{EXPLAIN_SHUTDOWN_TIMEOUT_S:-([\d.]+)\}", text
    )
    deadline = float(configured.group(1)) if configured else float(field.default)
    assert int(grace.group(1)) >= deadline + 5, "docker would SIGKILL before the shutdown deadline"


def test_optimize_false_serves_the_eager_model_only(monkeypatch):
    import time

    from service.state import ServiceState

    monkeypatch.setenv("EXPLAIN_OPTIMIZE", "false")
    settings = Settings(models=["alexnet:none"])
    assert settings.optimize is False and Settings.model_fields["optimize"].default is True
    state = ServiceState(settings)
    state.start()
    try:
        deadline = time.monotonic() + 60
        while not state.ready and state.status != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.ready
        assert state.models["alexnet"].runner.graphs is None
    finally:
        state.stop(10)
