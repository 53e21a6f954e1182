import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never reach the hub, and never touch the user's own database or models.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# AppTest and the test servers listen beyond localhost as far as Streamlit's settings tell, which turns
# authentication on; the tests of roles turn it on themselves.
os.environ["COMPRESSLENS_AUTH"] = "off"


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("compresslens-home")
    os.environ["COMPRESSLENS_HOME"] = str(home)
    os.environ["COMPRESSLENS_DB_URL"] = f"sqlite:///{home / 'session.db'}"
    if SHARED_DATA.is_dir():
        os.environ["COMPRESSLENS_DATA_DIR"] = str(SHARED_DATA)
    os.environ.pop("COMPRESSLENS_MODEL", None)
    return home


# A PostgreSQL server (scripts/with_postgres.sh starts one in CI): the database, experiment, worker and
# review tests then run on it as well as on SQLite, each test in a database of its own.
POSTGRES = os.environ.get("COMPRESSLENS_TEST_POSTGRES")
BOTH_BACKENDS = {"test_db", "test_experiments", "test_worker", "test_review", "test_accounts"}


def pytest_generate_tests(metafunc):
    if "db_backend" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        both = POSTGRES and module in BOTH_BACKENDS and not metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("db_backend", ["sqlite", "postgresql"] if both else ["sqlite"])


@pytest.fixture
def new_database(tmp_path, db_backend):
    """A factory of empty databases of the backend under test, dropped after the test."""
    import uuid

    from sqlalchemy import create_engine, text

    from db import session

    made, files = [], []

    def make(name: str = "test") -> str:
        if db_backend == "sqlite":
            files.append(tmp_path / f"{name}-{len(files)}.db")
            return f"sqlite:///{files[-1]}"
        database = f"cl_{name}_{uuid.uuid4().hex[:10]}"
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        made.append(database)
        return str(session.make_url(POSTGRES).set(database=database).render_as_string(hide_password=False))

    yield make
    if made:
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for database in made:
                for url, engine in list(session._engines.items()):
                    if database in url:
                        engine.dispose()
                        session._engines.pop(url)
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db_url(new_database, monkeypatch):
    url = new_database()
    monkeypatch.setenv("COMPRESSLENS_DB_URL", url)
    return url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A sharded tiny LLaDA checkpoint with an index json and a tokenizer carrying LLaDA's special tokens."""
    from core.generation.demo import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada"), max_shard_bytes=40_000, seed=1)


@pytest.fixture(scope="session")
def tiny_plan():
    """A factory of small experiment plans on a given model: 3 GSM8K prompts, random drop at two ratios."""
    from core.pipeline.experiments import Plan

    def make(model, **kw):
        values = dict(name="tiny", source="gsm8k", n_prompts=3, compressors=[{"name": "random", "params": {"seed": 1}}],
                      ratios=[1.5, 3.0], models=[str(model)], preset="custom",
                      sampler={"gen_length": 16, "steps": 16, "block_length": 8}, batch_size=2)
        values.update(kw)
        return Plan.from_dict(values)

    return make


@pytest.fixture(scope="session")
def demo_generator():
    from core.generation import demo
    from core.generation.generator import LLaDAGenerator

    return LLaDAGenerator(str(demo.DEMO_DIR), "cpu")


@pytest.fixture(scope="session")
def demo_heldout(demo_generator):
    """16 held-out problems and the demo model's reference-loop answers to them, for the tests that compare with
    that loop (the reference is the suite's costliest evaluation on the demo model, so it runs once)."""
    from core.data import mathgen
    from core.llada.sampler import PRESETS
    from core.pipeline.math_eval import evaluate

    problems = mathgen.generate(16, "heldout", seed=0)
    questions, answers = [p.question for p in problems], [p.answer for p in problems]
    return questions, answers, evaluate(demo_generator, questions, answers, PRESETS["small"][1], batch_size=16)


@pytest.fixture(scope="session")
def model_pool():
    """One model pool for the modules that share models: the packaged SmolLM2 control takes long to load."""
    from core.pipeline.service import ModelPool

    return ModelPool("cpu")


@pytest.fixture
def app_navigation(monkeypatch):
    """AppTest of app.py with its st.navigation in charge on every run, as scripts/serve.py has it on the real
    server: AppTest decides afresh on each run whether the `pages/` folder makes this an old-style multipage
    app, and from the second run on would run the page file without app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


CHROMIUM = shutil.which("chromium")


@pytest.fixture
def browser():
    """Debian's Chromium with the flags this offline machine needs; the test is skipped without it."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            yield launched
        finally:
            launched.close()


def pytest_collection_modifyitems(items):
    """A test that drives the browser is marked so: `-m "not browser"` leaves them out."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


def gsm8k_split(split: str) -> list[dict]:
    path = SHARED_DATA / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/gsm8k is not beside this checkout")
    import json

    with path.open() as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def gsm8k_questions():
    return gsm8k_split("test")


@pytest.fixture(scope="session")
def gsm8k_train():
    return gsm8k_split("train")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`streamlit run` of the dashboard on a free port, with the tiny model and its own home; start and stop it
    as often as a test needs, on the same port and database."""

    def __init__(self, tiny_checkpoint, home: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = env.pop("COMPRESSLENS_DB_URL", f"sqlite:///{home / 'browser.db'}")
        self.env = {**os.environ, "COMPRESSLENS_MODEL": str(tiny_checkpoint), "COMPRESSLENS_HOME": str(home),
                    "COMPRESSLENS_DB_URL": self.db_url, **env}
        self.process = None
        self.log = home / f"dashboard-{self.port}.log"  # every start appends, so a failed test can show it

    def start(self) -> "Dashboard":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "scripts/serve.py", "run", "app.py", "--server.port", str(self.port),
                 "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType",
                 "none"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item, for fixtures that say more when the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def dashboards(tiny_checkpoint, tmp_path, request):
    """Dashboard servers a test starts with settings of its own; every one is stopped after the test, and
    the end of each server's log is printed when the test failed (the report shows it), since a browser
    waiting in vain says nothing of why."""
    made = []

    def make(**env) -> Dashboard:
        made.append(Dashboard(tiny_checkpoint, tmp_path, **env))
        return made[-1]

    yield make
    for server in made:
        server.stop()
    if getattr(request.node, "report_call", None) is not None and request.node.report_call.failed:
        for server in made:
            tail = server.log.read_text(errors="replace")[-6000:] if server.log.is_file() else "(no log)"
            print(f"--- {server.url} log, last lines ---\n{tail}")


@pytest.fixture
def dashboard(dashboards):
    """The dashboard served on a free port, on the tiny model and a database in tmp_path."""
    return dashboards().start().url
