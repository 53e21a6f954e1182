"""History: every stored Playground run, filtered, sorted, tagged and re-opened in the side-by-side view;
and two experiments compared."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from core.errors import UserError
from core.evaluation import analysis
from core.render import csv_text, md_escape
from db.models import Item, Run
from db.queries import (RUN_SORTS, TAG_MAX_CHARS, delete_run, distinct_tags, distinct_values, normalise_tags,
                        run_summaries, set_tags)
from db.session import session_scope
from pages.shared import db_url, experiment_labels, load_view, require_reviewer, show_run

ALL = "(all)"


def unless_all(value):
    return None if value == ALL else value


def filter_choices() -> dict[str, list]:
    """Each filter's choices, taken from the runs History lists."""
    with session_scope(db_url()) as session:
        return {"models": distinct_values(session, Run.model_id),
                "compressors": distinct_values(session, Run.compressor),
                "ratios": distinct_values(session, Run.ratio_requested),
                "tasks": distinct_values(session, Item.task),
                "tags": distinct_tags(session)}


def run_filters(choices: dict[str, list]) -> dict:
    """The filter and sort widgets, as keyword arguments of run_summaries."""
    cols = st.columns([2, 2, 1, 1, 1.5])
    model = cols[0].selectbox("Model", [ALL] + choices["models"])
    compressor = cols[1].selectbox("Compressor", [ALL] + choices["compressors"])
    ratio = cols[2].selectbox("Ratio asked", [ALL] + choices["ratios"], key="ratio-filter",
                              format_func=lambda r: r if r == ALL else f"{r:g}x")
    task = cols[3].selectbox("Task", [ALL] + choices["tasks"])
    tag = cols[4].selectbox("Tag", [ALL] + choices["tags"], key="tag-filter")
    cols = st.columns([2, 1.5, 2])
    dates = cols[0].date_input("Created between", value=(), help="leave empty for all dates")
    flipped = cols[1].checkbox("Answer flipped", help="right on one prompt, wrong on the other")
    sort = cols[2].selectbox("Sort by", list(RUN_SORTS), key="sort")
    since = until = None
    if len(dates) == 2:
        since = datetime.combine(dates[0], time.min)
        until = datetime.combine(dates[1], time.min) + timedelta(days=1)
    return {"model": unless_all(model), "compressor": unless_all(compressor), "ratio": unless_all(ratio),
            "task": unless_all(task), "tag": unless_all(tag), "since": since, "until": until, "flipped": flipped,
            "sort": sort}


def edit_tags(run_id: int, current: list[str], known: list[str]) -> None:
    """Tags are saved as they change; a refused tag leaves the stored ones as they were."""
    names = st.multiselect("Tags of this run", sorted(set(known) | set(current)), default=current,
                           accept_new_options=True, key=f"tags-{run_id}",
                           help=f"Pick a tag or type a new one (at most {TAG_MAX_CHARS} characters) and press Enter.")
    try:
        wanted = normalise_tags(names)
        if wanted != current:
            with session_scope(db_url()) as session:
                set_tags(session, run_id, wanted)
            st.rerun()  # the table above still shows the old tags
    except UserError as error:
        st.error(md_escape(error))


def delete_button(run_id: int) -> None:
    with st.popover("Delete this run"):
        st.write(f"Run #{run_id} and its outputs, metrics and tags will be gone for good.")
        if st.button(f"Delete run #{run_id}", type="primary"):
            with session_scope(db_url()) as session:
                delete_run(session, run_id)
            st.rerun()


def runs_section() -> None:
    choices = filter_choices()
    filters = run_filters(choices)
    with session_scope(db_url()) as session:
        rows = run_summaries(session, **filters)
    if not rows:
        st.info("No stored runs yet: run a comparison in the Playground." if not choices["models"]
                else "No stored run matches these filters.")
        return

    st.dataframe(pd.DataFrame(rows).set_index("run"), width="stretch")
    by_run = {r["run"]: r for r in rows}
    labels = {r["run"]: f"#{r['run']} · {r['created']} · {r['compressor']} {r['ratio asked']:g}x · "
                        f"{r['prompt'][:50]}" for r in rows}
    chosen = st.selectbox("Open run", list(labels), format_func=labels.get, key="open-run")
    view = load_view(chosen)
    if view is None:
        st.error(f"Run #{chosen} no longer exists.")
        return
    cols = st.columns([4, 1], vertical_alignment="bottom")
    with cols[0]:
        edit_tags(chosen, by_run[chosen]["tags"], choices["tags"])
    with cols[1]:
        delete_button(chosen)
    show_run(view)


def experiment_outputs(experiment_id: int) -> pd.DataFrame | None:
    """The experiment's outputs, or None, said on the page, when there is nothing to compare."""
    try:
        frame = analysis.outputs_frame(db_url(), experiment_id)
    except UserError as error:  # deleted since the page listed it
        st.error(md_escape(error))
        return None
    if frame.empty:
        st.info(f"Experiment #{experiment_id} has no outputs yet: run it on the Experiments page or pick another.")
        return None
    return frame


def comparison_chart(table: pd.DataFrame, first: int, second: int) -> None:
    metric = st.selectbox("Metric to chart", list(dict.fromkeys(table["metric"])), key="compare-metric")
    part = table[table["metric"] == metric]
    # Legends show ids, not experiment names: plotly reads tags in its labels as markup.
    bars = part.melt(id_vars=["condition", "task"], value_vars=["mean_a", "mean_b"], var_name="experiment",
                     value_name="mean").replace({"experiment": {"mean_a": f"A (#{first})", "mean_b": f"B (#{second})"}})
    figure = px.bar(bars, x="condition", y="mean", color="experiment", barmode="group", facet_col="task",
                    labels={"mean": f"{metric} (mean)"})
    st.plotly_chart(figure, width="stretch")


def compare_section() -> None:
    labels = experiment_labels()
    if len(labels) < 2:
        st.info(f"Comparing needs two experiments ({len(labels)} stored so far): queue one on the Experiments page.")
        return
    ids = list(labels)
    cols = st.columns([3, 3, 2])
    first = cols[0].selectbox("Experiment A", ids, index=1, format_func=labels.get, key="compare-a")
    second = cols[1].selectbox("Experiment B", ids, index=0, format_func=labels.get, key="compare-b")
    reference = cols[2].selectbox("Scored against", analysis.REFERENCES, key="compare-reference")
    if first == second:
        st.warning("A and B are the same experiment: pick two different ones.")
        return
    frames = [experiment_outputs(experiment_id) for experiment_id in (first, second)]
    if any(frame is None for frame in frames):
        return
    table = analysis.compare_experiments(*frames, reference=reference)
    if table.empty:
        st.info(f"Neither experiment has metrics scored against {reference}.")
        return
    comparison_table(table, "B minus A per condition, task and metric, with a 95% bootstrap interval (10,000 "
                     "resamples). Paired by prompt, compressor, ratio and seed where both experiments scored the "
                     "same ones under a condition, otherwise unpaired (the pairing column says which).",
                     "Download comparison (CSV)", f"compare-{first}-vs-{second}-{reference}.csv")
    comparison_chart(table, first, second)
    degradation = analysis.compare_degradation(*frames, reference=reference)
    if not degradation.empty:
        st.subheader("What compression costs each")
        comparison_table(degradation, "Per compressed condition: each output's metric minus its own prompt's original "
                         "output's, then B minus A, paired as above. Two experiments of one plan on two models "
                         "compare how much each model degrades.", "Download degradation comparison (CSV)",
                         f"degradation-{first}-vs-{second}-{reference}.csv")


def comparison_table(table, caption: str, label: str, file_name: str) -> None:
    st.caption(caption)
    st.dataframe(table, width="stretch", hide_index=True)
    st.download_button(label, csv_text(table, index=False).encode(), file_name=file_name, mime="text/csv")


require_reviewer()
st.title("History")
st.caption("History lists Playground runs. Experiments are browsed on the Results page; compare two of them "
           "under Compare experiments.")
runs_tab, compare_tab = st.tabs(["Playground runs", "Compare experiments"])
with runs_tab:
    runs_section()
with compare_tab:
    compare_section()
