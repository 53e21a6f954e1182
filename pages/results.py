"""Results: one experiment's metrics against ratio, the study's table, and the tests a reviewer asks for."""

from __future__ import annotations

import plotly.express as px
import streamlit as st
from sqlalchemy import select

from core import analysis
from db.models import Experiment
from db.session import session_scope
from pages.shared import db_url

st.title("Results")

# Charts download as SVG from their toolbar (PNG too, with the camera's default format changed).
CHART_CONFIG = {"toImageButtonOptions": {"format": "svg", "filename": "compresslens-chart"}, "displaylogo": False}

with session_scope(db_url()) as session:
    experiments = {e.id: f"#{e.id} {e.name} ({e.status}, {e.done_units}/{e.total_units})"
                   for e in session.scalars(select(Experiment).order_by(Experiment.id.desc()))}
if not experiments:
    st.info("No experiments yet: queue one on the Experiments page.")
    st.stop()

experiment_id = st.selectbox("Experiment", list(experiments), format_func=experiments.get)
frame = analysis.outputs_frame(db_url(), experiment_id)
if frame.empty:
    st.info("This experiment has no outputs yet.")
    st.stop()


def table_with_download(table, name: str) -> None:
    st.dataframe(table, width="stretch")
    st.download_button(f"Download {name} (CSV)", table.to_csv().encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=f"csv-{name}")


def chart_and_table(figure, table, name: str) -> None:
    st.plotly_chart(figure, width="stretch", config=CHART_CONFIG)
    table_with_download(table, name)


curves, study, tests, drift, numbers, lengths = st.tabs(
    ["Metric vs ratio", "Study table", "Significance", "Omission vs drift", "Numbers kept", "Length control"])

with curves:
    metrics = analysis.metric_columns(frame)
    cols = st.columns(2)
    metric = cols[0].selectbox("Metric", metrics, index=metrics.index(analysis.EM) if analysis.EM in metrics else 0)
    condition = cols[1].selectbox("Condition", ["compressed", "reasoning_on_reconstructed", "reconstructed"])
    curve = analysis.ratio_curves(frame, metric, condition)
    if curve.empty:
        st.info("No values of this metric for this condition.")
    else:
        curve["line"] = curve["model"] + " · " + curve["compressor"]
        figure = px.line(curve, x="ratio", y="mean", color="line", markers=True,
                         error_y=curve["high"] - curve["mean"], error_y_minus=curve["mean"] - curve["low"],
                         labels={"mean": f"{metric} (mean, 95% bootstrap CI)", "ratio": "compression ratio"})
        chart_and_table(figure, curve.drop(columns="line"), "ratio-curves")

with study:
    reference = st.selectbox("Scored against", ["gold", "reference_summary", "original_output", "original_prompt"])
    table_with_download(analysis.study_table(frame, reference), f"study-table-{reference}")

with tests:
    st.caption("Original against each compressed condition, paired by prompt: McNemar for exact match, "
               "paired bootstrap (10,000 resamples) for continuous metrics.")
    table_with_download(analysis.significance(frame), "significance")
    st.caption("Variance across seeds of exact match")
    table_with_download(analysis.seed_variance(frame), "seed-variance")

with drift:
    pr = analysis.precision_recall(frame)
    if pr.empty:
        st.info("No BERTScore of compressed-prompt outputs against original outputs yet.")
    else:
        st.caption("Below the diagonal the output left things out (recall < precision); above it, it added.")
        figure = px.scatter(pr, x="precision", y="recall", color="ratio", symbol="compressor",
                            hover_data=["source_id", "task"], range_x=[0, 1.02], range_y=[0, 1.02])
        figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "grey"})
        chart_and_table(figure, pr, "precision-recall")

with numbers:
    kept = analysis.numbers_kept(frame)
    if kept.empty:
        st.info("No math prompts with exact match in this experiment.")
    else:
        summary = kept.groupby(["compressor", "ratio", "numbers_kept"])["correct"].agg(["mean", "count"]).reset_index()
        figure = px.scatter(summary, x="numbers_kept", y="mean", size="count", color="ratio", symbol="compressor",
                            labels={"numbers_kept": "share of the prompt's numbers kept", "mean": "accuracy"})
        chart_and_table(figure, kept, "numbers-kept")

with lengths:
    table = analysis.length_control(frame)
    if table.empty:
        st.info("Not enough exact-match values to bin by length.")
    else:
        figure = px.bar(table, x="tokens", y="accuracy", color="length of", barmode="group", hover_data=["n"])
        chart_and_table(figure, table, "length-control")
