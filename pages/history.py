"""History: every stored run, filterable, each re-openable in the side-by-side view."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import streamlit as st

from db.models import Item, Run
from db.queries import delete_run, distinct_values, run_summaries
from db.session import session_scope
from pages.shared import db_url, load_view, show_run

st.title("History")

with session_scope(db_url()) as session:
    models = distinct_values(session, Run.model_id)
    compressor_names = distinct_values(session, Run.compressor)
    tasks = distinct_values(session, Item.task)

cols = st.columns([2, 2, 1, 2, 1.5])
model = cols[0].selectbox("Model", ["(all)"] + models)
compressor = cols[1].selectbox("Compressor", ["(all)"] + compressor_names)
task = cols[2].selectbox("Task", ["(all)"] + tasks)
dates = cols[3].date_input("Created between", value=(), help="leave empty for all dates")
flipped = cols[4].checkbox("Answer flipped", help="right on one prompt, wrong on the other")
since = until = None
if len(dates) == 2:
    since = datetime.combine(dates[0], time.min)
    until = datetime.combine(dates[1], time.min) + timedelta(days=1)

with session_scope(db_url()) as session:
    rows = run_summaries(session, compressor=None if compressor == "(all)" else compressor,
                         model=None if model == "(all)" else model, task=None if task == "(all)" else task,
                         since=since, until=until, flipped=flipped)

if not rows:
    st.info("No stored runs yet: run a comparison in the Playground.")
    st.stop()

st.dataframe(pd.DataFrame(rows).set_index("run"), width="stretch")
labels = {r["run"]: f"#{r['run']} · {r['created']} · {r['compressor']} {r['ratio asked']:g}x · {r['prompt'][:50]}"
          for r in rows}
chosen = st.selectbox("Open run", list(labels), format_func=labels.get)
view = load_view(chosen)
if view is None:
    st.error(f"Run #{chosen} no longer exists.")
    st.stop()
with st.popover("Delete this run"):
    st.write(f"Run #{chosen} and its outputs and metrics will be gone for good.")
    if st.button(f"Delete run #{chosen}", type="primary"):
        with session_scope(db_url()) as session:
            delete_run(session, chosen)
        st.rerun()
show_run(view)
