"""The Results page's way from a chart to one prompt: the side-by-side view of an experiment's prompt."""

import json
from html import escape
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.evaluation import analysis
from core.pipeline.experiments import Runner, find_or_create
from core.pipeline.service import ModelPool
from db.queries import item_view
from db.session import session_scope

RESULTS = Path(__file__).resolve().parents[1] / "pages" / "results.py"


@pytest.fixture
def finished(tiny_plan, tiny_checkpoint, db_url, monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    experiment_id = find_or_create(tiny_plan(tiny_checkpoint), db_url)
    Runner(experiment_id, ModelPool("cpu"), db_url).run()
    return experiment_id, analysis.outputs_frame(db_url, experiment_id)


def test_item_view_joins_the_prompt_with_its_baseline(finished, db_url):
    _, frame = finished
    runs = analysis.compressed_runs(frame)
    assert list(runs["ratio"]) == [1.5, 3.0]
    run_id = int(runs["run_id"].iloc[1])
    source_id = analysis.prompt_rows(frame, run_id)["source_id"].iloc[0]
    with session_scope(db_url) as session:
        view = item_view(session, run_id, source_id)
    rows = frame[frame["source_id"] == source_id].set_index(["run_id", "condition"])
    baseline_run = int(frame[frame["condition"] == "original"]["run_id"].iloc[0])
    assert view["original_output"] == rows.loc[(baseline_run, "original"), "output"]
    assert view["compressed_output"] == rows.loc[(run_id, "compressed"), "output"]
    assert view["compressed_prompt"] == rows.loc[(run_id, "compressed"), "prompt"]
    assert view["ratio_requested"] == 3.0 and view["sampler"]["gen_length"] == 16
    assert [c["name"] for c in view["other_conditions"]] == ["reconstructed", "reasoning_on_reconstructed"]
    assert "original_prompt" in view["other_conditions"][0]["metrics"]
    with session_scope(db_url) as session, pytest.raises(KeyError):
        item_view(session, run_id, "no-such-prompt")


def test_prompt_rows_carry_both_verdicts(finished):
    _, frame = finished
    run_id = int(analysis.compressed_runs(frame)["run_id"].iloc[0])
    table = analysis.prompt_rows(frame, run_id)
    assert len(table) == 3 and table["source_id"].is_unique
    compressed = frame[(frame["run_id"] == run_id) & (frame["condition"] == "compressed")]
    assert list(table["correct on compressed"]) == list(compressed[analysis.EM])
    assert table["correct on original"].notna().all()


def test_results_page_opens_a_prompt_side_by_side(finished):
    _, frame = finished
    runs = analysis.compressed_runs(frame)
    at = AppTest.from_file(str(RESULTS), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="open-run").value == int(runs["run_id"].iloc[0])
    second_run = int(runs["run_id"].iloc[1])
    at.selectbox(key="open-run").select(second_run).run()
    prompt = analysis.prompt_rows(frame, second_run)["source_id"].iloc[2]
    at.selectbox(key="open-prompt").select(prompt).run()
    assert not at.exception, at.exception
    expected = frame[(frame["run_id"] == second_run) & (frame["source_id"] == prompt)
                     & (frame["condition"] == "compressed")].iloc[0]
    bodies = " ".join(element.proto.body for element in at.get("html"))
    assert escape(expected["output"]) in bodies and escape(expected["prompt"]) in bodies
    assert any("3x" in m.value for m in at.metric)
    assert {"Reconstructions of the original prompt", "Output on the reconstructed prompt"} <= {
        s.value for s in at.subheader}
    assert "**Reconstruction asked by instruction**" in [m.value for m in at.markdown]

    def export_formats(at):
        configs = [json.loads(chart.proto.config) for chart in at.get("plotly_chart")]
        return [c["toImageButtonOptions"]["format"] for c in configs if "toImageButtonOptions" in c]

    assert len(export_formats(at)) >= 3 and set(export_formats(at)) == {"png"}
    at.radio[0].set_value("svg").run()
    assert set(export_formats(at)) == {"svg"}
    clickable = [chart.proto.selection_mode for chart in at.get("plotly_chart")]
    assert sum(1 for modes in clickable if list(modes)) == 2  # ratio curves and precision vs recall


def test_clicking_a_chart_point_opens_that_prompt_and_charts_download(browser, tiny_plan, dashboard, tiny_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 'browser.db'}"  # the database the dashboard fixture serves
    experiment_id = find_or_create(tiny_plan(tiny_checkpoint), url)
    Runner(experiment_id, ModelPool("cpu"), url).run()
    points = analysis.precision_recall(analysis.outputs_frame(url, experiment_id))
    page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page.goto(dashboard + "/results")
    page.get_by_role("tab", name="Omission vs drift").click()
    chart = page.get_by_role("tabpanel", name="Omission vs drift").locator(".js-plotly-plot")
    chart.locator(".scatterlayer .point").first.wait_for(timeout=60_000)
    plotted = chart.evaluate("plot => plot.data.flatMap(t => t.customdata.map(c => c[0] + '|' + c[1]))")
    assert sorted(plotted) == sorted(f"{r}|{s}" for r, s in zip(points["run_id"], points["source_id"]))
    # the last point is never the prompt the page opens by default (the first run's first prompt)
    run_id, source_id = chart.evaluate("plot => plot.data.at(-1).customdata.at(-1)")[:2]
    caption = page.get_by_text(f"Experiment #{experiment_id} · run #{run_id} · prompt {source_id}", exact=False)
    page.get_by_text(f"Experiment #{experiment_id} · run #", exact=False).wait_for(timeout=60_000)
    assert caption.count() == 0
    chart.locator(".scatterlayer .trace").last.locator(".point").last.click(force=True)
    caption.wait_for(timeout=60_000)

    chart.hover()
    with page.expect_download() as download:
        chart.locator('.modebar-btn[data-title^="Download plot"]').click()
    assert download.value.suggested_filename == "compresslens-precision-recall.png"
