"""AvatarSettings: validated at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.avatar.app import AvatarSettings, build_chain, build_llm
from services.common.config import ConfigError
from tests.avatar.conftest import avatar_settings


def test_defaults(tmp_path: Path) -> None:
    s = avatar_settings(tmp_path)
    assert s.llm_provider == "persona" and build_llm(s) is None
    assert s.models_path() == tmp_path / "models"
    assert s.avatar_max_generations == 5
    assert build_chain(s).order("realistic") == ["procedural"]  # no Meshy key: procedural only
    with_meshy = avatar_settings(tmp_path, meshy_api_key="k", model_dir=tmp_path / "m")
    assert build_chain(with_meshy).order("realistic") == ["meshy", "procedural"]
    assert build_chain(with_meshy).order("robot") == ["procedural"]
    assert with_meshy.models_path() == tmp_path / "m"


@pytest.mark.parametrize(
    "overrides",
    [
        {"avatar_routes": "realistic"},
        {"model_base_url": "ftp://cdn"},
        {"meshy_base_url": "api.meshy.ai"},
        {"llm_provider": "gpt"},
        {"avatar_max_generations": 0},
        {"avatar_workers": 0},
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AvatarSettings(var_dir=tmp_path, **overrides)  # type: ignore[arg-type]


def test_openai_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    s = avatar_settings(tmp_path, llm_provider="openai", llm_base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError):
        build_llm(s)
