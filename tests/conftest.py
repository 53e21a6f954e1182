import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never reach the hub, and never touch the user's own database or models.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("compresslens-home")
    os.environ["COMPRESSLENS_HOME"] = str(home)
    os.environ["COMPRESSLENS_DB_URL"] = f"sqlite:///{home / 'session.db'}"
    if SHARED_DATA.is_dir():
        os.environ["COMPRESSLENS_DATA_DIR"] = str(SHARED_DATA)
    os.environ.pop("COMPRESSLENS_MODEL", None)
    return home


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'test.db'}"
    monkeypatch.setenv("COMPRESSLENS_DB_URL", url)
    return url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A sharded tiny LLaDA checkpoint with an index json and a tokenizer carrying LLaDA's special tokens."""
    from core.demo import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada"), max_shard_bytes=40_000, seed=1)


@pytest.fixture(scope="session")
def gsm8k_questions():
    path = SHARED_DATA / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/gsm8k is not beside this checkout")
    import json

    with path.open() as f:
        return [json.loads(line) for line in f]
