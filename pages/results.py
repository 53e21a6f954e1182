"""Results: one experiment's metrics against ratio, the study's table, and the tests a reviewer asks for."""

from __future__ import annotations

import json

import plotly.express as px
import streamlit as st

from core import render
from core.evaluation import analysis
from pages.shared import db_url, experiment_labels, load_item_view, require_reviewer, show_run

def table_with_download(table, name: str) -> None:
    st.dataframe(table, width="stretch")
    st.download_button(f"Download {name} (CSV)", render.csv_text(table).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=f"csv-{name}")


def open_clicked(event, chart: str) -> None:
    """A click on a point whose custom data is (run id[, prompt id]) opens it below; each click once,
    since the chart's selection survives the reruns that follow it."""
    points = event.selection.points if event else []
    custom = points[0].get("customdata") if points else None
    if not custom or custom[0] is None:
        return
    token = json.dumps(custom)
    if st.session_state.get(f"clicked-{chart}") == token:
        return
    st.session_state[f"clicked-{chart}"] = token
    st.session_state["open-run"] = int(custom[0])
    if len(custom) > 1:
        st.session_state["open-prompt"] = str(custom[1])
    st.toast("Opened below, under 'One prompt, side by side'.")


def chart_and_table(figure, table, name: str, clickable: bool = False) -> None:
    # Below the plot, so a colour scale and a symbol legend never draw over each other.
    figure.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2})
    config = {"toImageButtonOptions": {"format": st.session_state["image-format"], "filename": f"compresslens-{name}"},
              "displaylogo": False}
    if clickable:
        event = st.plotly_chart(figure, width="stretch", config=config, on_select="rerun",
                                selection_mode="points", key=f"chart-{name}")
        open_clicked(event, name)
    else:
        st.plotly_chart(figure, width="stretch", config=config)
    table_with_download(table, name)


def pick_experiment() -> int:
    """The experiment to show, and the format chart downloads are saved in."""
    experiments = experiment_labels()
    if not experiments:
        st.info("No experiments yet: queue one on the Experiments page.")
        st.stop()
    cols = st.columns([4, 1])
    experiment_id = cols[0].selectbox("Experiment", list(experiments), format_func=experiments.get)
    cols[1].radio("Chart downloads", ["png", "svg"], horizontal=True, format_func=str.upper, key="image-format",
                  help="the camera button in each chart's toolbar saves it in this format")
    return experiment_id


def curves_tab(frame) -> None:
    metrics = analysis.metric_columns(frame)
    cols = st.columns(2)
    metric = cols[0].selectbox("Metric", metrics, index=metrics.index(analysis.EM) if analysis.EM in metrics else 0)
    condition = cols[1].selectbox("Condition", ["compressed", "reasoning_on_reconstructed", "reconstructed"])
    curve = analysis.ratio_curves(frame, metric, condition)
    if curve.empty:
        st.info("No values of this metric for this condition.")
        return
    curve["line"] = curve["model"] + " · " + curve["compressor"]
    st.caption("Click a compressed point to open its prompts below.")
    figure = px.line(curve, x="ratio", y="mean", color="line", markers=True, custom_data=["run_id"],
                     error_y=curve["high"] - curve["mean"], error_y_minus=curve["mean"] - curve["low"],
                     labels={"mean": f"{metric} (mean, 95% bootstrap CI)", "ratio": "compression ratio"})
    chart_and_table(figure, curve.drop(columns="line"), "ratio-curves", clickable=True)


def study_tab(frame) -> None:
    reference = st.selectbox("Scored against", ["gold", "reference_summary", "original_output", "original_prompt"])
    table_with_download(analysis.study_table(frame, reference), f"study-table-{reference}")


def reconstruction_tab(frame) -> None:
    table = analysis.reconstruction_table(frame)
    if table.empty:
        st.info("No reconstructions in this experiment: add the reconstructed or infilled conditions to a plan.")
        return
    st.caption("Against the original prompt: the share of dropped words (and numbers) each reconstruction brings "
               "back, BLEU, ROUGE-L and BERTScore F1; then the accuracy of answering the rebuilt prompt.")
    figure = px.line(table, x="ratio", y="dropped_words_restored", color="compressor", line_dash="condition",
                     markers=True, facet_col="model", range_y=[0, 1.02],
                     labels={"dropped_words_restored": "share of dropped words restored", "ratio": "compression ratio"})
    chart_and_table(figure, table.set_index(["model", "compressor", "ratio", "condition"]), "reconstruction")


def commitment_tab(frame) -> None:
    table = analysis.answer_commitment(frame)
    if table.empty:
        st.info("No math outputs with a stored trajectory and an extracted answer in this experiment.")
        return
    st.caption("When the final-answer tokens were committed (as a share of the output's steps) and how sure the "
               "model was of them then, right answers against wrong ones, original against compressed prompts. "
               "Click a point to open that prompt below.")
    table = table.assign(verdict=table["correct"].map({True: "right", False: "wrong"}))
    figure = px.strip(table, x="verdict", y="commit_step_share", color="condition", custom_data=["run_id", "source_id"],
                      hover_data=["confidence", "compressor", "ratio"], range_y=[0, 1.02],
                      labels={"commit_step_share": "answer committed at (share of steps)"})
    chart_and_table(figure, table.groupby(["condition", "verdict"])[["commit_step_share", "confidence"]]
                    .agg(["mean", "count"]), "answer-commitment", clickable=True)


def compute_tab(frame) -> None:
    table = analysis.compute_savings(frame)
    if table.empty:
        st.info("No compute counts stored for this experiment (runs stored before they were kept have none).")
        return
    st.caption("Each point: a compressor at a ratio under a sampler mode. Across: the share of the token positions "
               "the model computed (summed over its forward passes) that the shorter prompt saved; up: accuracy "
               "on the compressed prompts. The reference recomputes the prompt at every step; a prefix or dual "
               "cache does not, so it saves less.")
    y = "accuracy" if "accuracy" in table else "forward_passes"
    figure = px.scatter(table, x="compute_saved", y=y, color="compressor", symbol="sampler", text="ratio",
                        facet_col="model", range_x=[0, 1], labels={"compute_saved": "share of compute saved"})
    figure.update_traces(textposition="top center")
    chart_and_table(figure, table, "compute")


def significance_tab(frame) -> None:
    st.caption("Original against each compressed condition, paired by prompt: McNemar for exact match, "
               "paired bootstrap (10,000 resamples) for continuous metrics.")
    table_with_download(analysis.significance(frame), "significance")
    st.caption("Variance across seeds of exact match")
    table_with_download(analysis.seed_variance(frame), "seed-variance")


def models_tab(frame) -> None:
    if frame["model"].nunique() < 2:
        st.info("This experiment ran one model. A plan with several models (Experiments page) runs each on the same "
                "compressed prompts; this tab then compares them prompt by prompt.")
        return
    st.caption("Each pair of models on the same prompts, per condition, compressor and ratio: the score itself and "
               "its degradation (compressed minus original, per prompt), B minus A. McNemar on exact match, paired "
               "bootstrap (10,000 resamples) for the rest.")
    table_with_download(analysis.model_comparison(frame), "model-comparison")


def drift_tab(frame) -> None:
    pr = analysis.precision_recall(frame)
    if pr.empty:
        st.info("No BERTScore of compressed-prompt outputs against original outputs yet.")
        return
    st.caption("Below the diagonal the output left things out (recall < precision); above it, it added. "
               "Click a point to open that prompt below.")
    figure = px.scatter(pr, x="precision", y="recall", color="ratio", symbol="compressor",
                        custom_data=["run_id", "source_id"], hover_data=["source_id", "task"],
                        range_x=[0, 1.02], range_y=[0, 1.02])
    figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "grey"})
    chart_and_table(figure, pr, "precision-recall", clickable=True)


def numbers_tab(frame) -> None:
    kept = analysis.numbers_kept(frame)
    if kept.empty:
        st.info("No math prompts with exact match in this experiment.")
        return
    summary = kept.groupby(["compressor", "ratio", "numbers_kept"])["correct"].agg(["mean", "count"]).reset_index()
    figure = px.scatter(summary, x="numbers_kept", y="mean", size="count", color="ratio", symbol="compressor",
                        labels={"numbers_kept": "share of the prompt's numbers kept", "mean": "accuracy"})
    chart_and_table(figure, kept, "numbers-kept")


def lengths_tab(frame) -> None:
    table = analysis.length_control(frame)
    if table.empty:
        st.info("Not enough exact-match values to bin by length.")
        return
    figure = px.bar(table, x="tokens", y="accuracy", color="length of", barmode="group", hover_data=["n"])
    chart_and_table(figure, table, "length-control")


def one_prompt_section(frame) -> None:
    """A compressed run and one of its prompts, side by side (charts' clicks land here)."""
    st.header("One prompt, side by side")
    runs = analysis.compressed_runs(frame)
    if runs.empty:
        st.info("This experiment has no compressed prompts yet.")
        return
    run_labels = {int(r.run_id): f"run #{r.run_id} · {r.model} · {r.compressor} {r.ratio:g}x · seed {r.seed}"
                  for r in runs.itertuples()}
    if st.session_state.get("open-run") not in run_labels:
        st.session_state["open-run"] = next(iter(run_labels))
    run_id = st.selectbox("Compressed run", list(run_labels), format_func=run_labels.get, key="open-run")
    prompts = analysis.prompt_rows(frame, run_id)
    table_with_download(prompts.set_index("source_id"), f"prompts-run-{run_id}")
    prompt_ids = list(prompts["source_id"])
    if st.session_state.get("open-prompt") not in prompt_ids:
        st.session_state["open-prompt"] = prompt_ids[0]
    source_id = st.selectbox("Prompt", prompt_ids, key="open-prompt")
    view = load_item_view(run_id, source_id)
    if view is None:
        st.info("This prompt has no output on the original prompt in this experiment (the plan left out the "
                "'original' condition, or it has not run yet).")
    else:
        show_run(view)


require_reviewer()
st.title("Results")
frame = analysis.outputs_frame(db_url(), pick_experiment())
if frame.empty:
    st.info("This experiment has no outputs yet.")
    st.stop()
TABS = {"Metric vs ratio": curves_tab, "Study table": study_tab, "Reconstruction": reconstruction_tab,
        "Answer commitment": commitment_tab, "Compute": compute_tab, "Significance": significance_tab,
        "Models": models_tab,
        "Omission vs drift": drift_tab, "Numbers kept": numbers_tab, "Length control": lengths_tab}
for tab, show in zip(st.tabs(list(TABS)), TABS.values()):
    with tab:
        show(frame)
one_prompt_section(frame)
