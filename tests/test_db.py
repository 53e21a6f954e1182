import json

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from db import models
from db.migrations import MIGRATIONS
from db.session import get_engine, migrate, schema_version, session_scope


def test_new_database_is_at_the_latest_schema(db_url):
    assert schema_version(db_url) == MIGRATIONS[-1][0] == 10
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"runs", "items", "conditions", "outputs", "metrics", "jobs", "experiments", "schema_migrations"} <= tables


def test_migration_2_upgrades_a_version_1_database(db_url):
    engine = get_engine(db_url)
    with engine.begin() as conn:  # back to what version 1 had
        conn.execute(text("DROP INDEX uq_runs_experiment_config"))
        conn.execute(text("DROP INDEX uq_outputs_condition_seed"))
        conn.execute(text("ALTER TABLE runs DROP COLUMN config_key"))
        conn.execute(text("DELETE FROM schema_migrations WHERE version = 2"))
    assert "config_key" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    migrate(engine)
    migrate(engine)  # a second pass changes nothing
    assert schema_version(db_url) == MIGRATIONS[-1][0]
    assert "config_key" in {c["name"] for c in inspect(engine).get_columns("runs")}
    assert "uq_outputs_condition_seed" in {i["name"] for i in inspect(engine).get_indexes("outputs")}


def test_one_output_per_condition_and_seed(db_url):
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            run = models.Run(model_id="m", model_path="p", model_kind="llada", model_parameters=1, device="cpu",
                             dtype="float32", preset="demo", sampler_params={}, seed=0, compressor="none",
                             compressor_params={}, ratio_requested=1.0, bertscore_backbone="b", versions={},
                             timings={})
            item = models.Item(source="s", source_id="1", task="math", prompt="q")
            condition = models.Condition(name="original", prompt_text="q", prompt_tokens=1)
            condition.outputs += [models.Output(seed=0, text="a", token_ids=[], seconds=0, forward_calls=1),
                                  models.Output(seed=0, text="b", token_ids=[], seconds=0, forward_calls=1)]
            item.conditions.append(condition)
            run.items.append(item)
            session.add(run)
    with session_scope(db_url) as session:
        assert session.query(models.Run).count() == 0  # the failed transaction left nothing behind


def test_history_filters_flips_and_dates_and_deletes(tiny_checkpoint, db_url, capsys):
    from datetime import datetime, timedelta

    from core.__main__ import main
    from db.queries import delete_run, run_summaries

    for seed in (0, 1):
        assert main(["compare", "--model", str(tiny_checkpoint), "--prompt", "Tom has 3 apples and 5 pears.",
                     "--compressor", "random", "--ratio", "2", "--gold", "8", "--seed", str(seed),
                     "--db", db_url, "--json"]) == 0
    capsys.readouterr()
    with session_scope(db_url) as session:
        assert [r["run"] for r in run_summaries(session)] == [2, 1]
        assert run_summaries(session, flipped=True) == []
        metric = session.execute(
            text("SELECT metrics.id FROM metrics JOIN outputs ON outputs.id = metrics.output_id "
                 "JOIN conditions ON conditions.id = outputs.condition_id JOIN items ON items.id = conditions.item_id "
                 "WHERE items.run_id = 1 AND conditions.name = 'compressed' AND metrics.reference = 'gold'")).scalar()
        session.get(models.Metric, metric).value = 1.0  # the compressed prompt got it right, the original did not
    with session_scope(db_url) as session:
        assert [r["run"] for r in run_summaries(session, flipped=True)] == [1]
        tomorrow = datetime.now() + timedelta(days=1)
        assert run_summaries(session, since=tomorrow) == []
        assert len(run_summaries(session, until=tomorrow)) == 2
        assert delete_run(session, 1) and not delete_run(session, 99)
    with session_scope(db_url) as session:
        assert [r["run"] for r in run_summaries(session)] == [2]
        assert session.query(models.Output).count() == 2  # run 1's outputs went with it


def test_history_choices_come_from_playground_runs_only(tiny_plan, tiny_checkpoint, db_url, capsys):
    from core.__main__ import main
    from core.pipeline.experiments import Runner, find_or_create
    from core.pipeline.service import ModelPool
    from db.queries import distinct_values
    
    Runner(find_or_create(tiny_plan(tiny_checkpoint), db_url), ModelPool("cpu"), db_url).run()
    assert main(["compare", "--model", str(tiny_checkpoint), "--prompt", "Tom has 3 apples.", "--compressor",
                 "truncate", "--ratio", "2", "--db", db_url, "--json"]) == 0
    capsys.readouterr()
    with session_scope(db_url) as session:
        assert distinct_values(session, models.Run.compressor) == ["truncate"]  # not the experiment's none/random
        assert distinct_values(session, models.Item.task) == ["custom"]


def schema(engine) -> dict:
    """Tables with their columns (type, nullability, key), indexes, unique constraints and foreign keys
    (column, table, referred column, on delete) of a SQLite or PostgreSQL database."""
    inspector = inspect(engine)
    tables = {}
    for table in sorted(inspector.get_table_names()):
        tables[table] = {
            "columns": sorted((c["name"], str(c["type"]).split("(")[0], c["nullable"], bool(c.get("primary_key")))
                              for c in inspector.get_columns(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        }
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:  # SQLAlchemy does not reflect ON DELETE of a column SQLite added later
                keys = [(row[3], row[2], row[4], row[6])
                        for row in conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})")]
        else:
            keys = [(k["constrained_columns"][0], k["referred_table"], k["referred_columns"][0],
                     (k["options"].get("ondelete") or "NO ACTION").upper())
                    for k in inspector.get_foreign_keys(table)]
        tables[table]["foreign_keys"] = sorted(keys)
    return tables


def database_at(version: int, url: str):
    """A database as the first ``version`` migrations left it, not yet opened by the app."""
    from sqlalchemy import create_engine

    old = create_engine(url)
    models.SchemaMigration.__table__.create(old)
    for number, name, step in MIGRATIONS[:version]:
        step(old)
        with old.begin() as conn:
            conn.execute(models.SchemaMigration.__table__.insert().values(version=number, name=name))
    return old


def test_a_database_upgraded_from_every_earlier_version_has_the_schema_of_a_new_one_and_the_models(new_database):
    from sqlalchemy import create_engine

    from db.migrations import MIGRATIONS as STEPS

    expected = schema(get_engine(new_database("fresh")))
    from_models = create_engine(new_database("models"))
    models.Base.metadata.create_all(from_models)
    assert schema(from_models) == expected  # the migrations build what the code reads and writes
    from_models.dispose()
    for version in range(len(STEPS)):
        url = new_database(f"v{version}")
        database_at(version, url).dispose()
        assert schema(get_engine(url)) == expected, f"upgraded from version {version}"
        assert schema_version(url) == STEPS[-1][0]


def test_a_version_4_database_made_before_unblinded_review_gets_the_blind_column_and_keeps_its_tasks(new_database):
    url = new_database("v4")
    old = database_at(4, url)
    with old.begin() as conn:
        conn.execute(text("INSERT INTO review_tasks (name, created_at, experiment_ids, pair, n_items, "
                          "annotators_per_item, seed) VALUES ('old task', '2026-11-20 10:00:00', '[1]', "
                          "'original_vs_compressed', 10, 2, 0)"))
    assert "blind" not in {c["name"] for c in inspect(old).get_columns("review_tasks")}
    old.dispose()
    with session_scope(url) as session:
        task = session.scalars(select(models.ReviewTask)).one()
        assert task.name == "old task" and task.blind is True


def test_a_version_6_database_keeps_each_experiments_status_on_its_jobs(new_database):
    """Before step 7 an experiment kept its own status: a cancelled one whose job said "done", one run
    from the command line with no job, and a queued one; each reads the same after the upgrade."""
    from db.queries import experiment_states

    url = new_database("v6")
    old = database_at(6, url)
    with old.begin() as conn:
        for number, (status, error) in enumerate([("cancelled", None), ("failed", "out of memory"), ("queued", None)],
                                                 start=1):
            conn.execute(text("INSERT INTO experiments (id, name, plan, status, total_units, done_units, error, "
                              "created_at) VALUES (:id, 'e', '{}', :status, 10, 4, :error, '2026-11-20 10:00:00')"),
                         {"id": number, "status": status, "error": error})
        for experiment_id, status in ((1, "done"), (3, "queued")):
            conn.execute(text("INSERT INTO jobs (kind, params, status, progress, message, created_at) VALUES "
                              "('experiment', :params, :status, 0, '', '2026-11-20 10:00:00')"),
                         {"params": f'{{"experiment_id": {experiment_id}}}', "status": status})
    old.dispose()
    with session_scope(url) as session:
        states = experiment_states(session, [1, 2, 3])
        assert [states[i]["status"] for i in (1, 2, 3)] == ["cancelled", "failed", "queued"]
        assert states[2]["error"] == "out of memory"
        assert {j.experiment_id: j.params for j in session.scalars(select(models.Job))} == {1: {}, 2: {}, 3: {}}
    assert not {"status", "done_units", "error", "finished_at"} & {
        c["name"] for c in inspect(get_engine(url)).get_columns("experiments")}


def test_plain_postgresql_urls_get_the_installed_driver_and_an_unreachable_one_a_message(capsys):
    from core.__main__ import main
    from db.session import driver_url

    assert driver_url("postgresql://u:p@db.lab/compresslens") == "postgresql+psycopg://u:p@db.lab/compresslens"
    assert driver_url("postgres://u@db.lab/c") == "postgresql+psycopg://u@db.lab/c"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    assert main(["export", "--experiment", "1", "--db", "postgresql://me:secret@127.0.0.1:1/nodb"]) == 2
    err = capsys.readouterr().err
    assert "Cannot open the database at postgresql+psycopg://me:***@127.0.0.1:1/nodb" in err
    assert "secret" not in err and "Traceback" not in err


def test_exported_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tiny_checkpoint, db_url, tmp_path, capsys):
    import csv
    import io

    import pandas as pd

    from core.__main__ import main
    from core.render import csv_cell, csv_text

    assert [csv_cell(v) for v in ("=1+2", "+SUM(A1)", "-2+3", "@cmd", "plain", 3.5, -2)] == [
        "'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "plain", 3.5, -2]
    frame = pd.DataFrame({"=HYPERLINK(\"x\")": ["=cmd|' /C calc'!A0", "ok"]}, index=["@a", "b"])
    rows = list(csv.reader(io.StringIO(csv_text(frame))))
    assert rows == [["", "'=HYPERLINK(\"x\")"], ["'@a", "'=cmd|' /C calc'!A0"], ["b", "ok"]]
    hostile = "=HYPERLINK(\"http://evil\") Tom has 3 apples and buys 5 more. How many?"
    plan = {"name": "csv", "source": {"kind": "inline", "name": "mine", "samples": [
        {"source_id": "1", "task": "math", "prompt": hostile, "gold_solution": "#### 8", "reference": None}]}, "n_prompts": 1, "conditions": ["original"], "models": [str(tiny_checkpoint)],
        "preset": "custom", "sampler": {"gen_length": 8, "steps": 8, "block_length": 8}}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    assert main(["experiment", "--plan", str(plan_file), "--db", db_url]) == 0
    capsys.readouterr()
    assert main(["export", "--experiment", "1", "--format", "csv", "--db", db_url]) == 0
    exported = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert exported[0]["item_prompt"] == "'" + hostile
