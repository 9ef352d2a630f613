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
