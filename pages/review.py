"""Review: annotators judge two stored texts of a prompt blind, as A and B; a reviewer creates the tasks, reads
the unblinded results and, with authentication on, manages the annotators' accounts and invite links.

With authentication on, who is who comes from the signed-in session, never from a widget: an annotator's
session draws only their own queue, and the core refuses them any item not assigned to them."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core import accounts
from core.errors import UserError
from core.evaluation import review
from core.pipeline.metrics import METRIC_LABELS
from core.render import md_escape, text_html
from pages.shared import app_url, auth_on, db_url, experiment_labels, signed_in

PARTS = {"annotate": "an annotator", "create": "a reviewer creating a task", "results": "a reviewer reading results"}
REVIEWER_PARTS = {"create": "Create a task", "results": "Read results", "accounts": "Annotators and invite links"}
PREFERENCE_LABELS = {"A": "A", "B": "B", "tie": "Tie", "both_bad": "Both bad"}


def tasks() -> dict[int, dict]:
    return {t["id"]: t for t in review.list_tasks(db_url())}


def active_annotators() -> list[str]:
    return [a["name"] for a in accounts.list_accounts(db_url(), "annotator") if a["active"]]


def task_label(task: dict) -> str:
    return f"#{task['id']} {task['name']} ({task['items']} items{'' if task['blind'] else ', not blind'})"


# Creating a task


def create_section() -> None:
    experiments = experiment_labels()
    if not experiments:
        st.info("No experiments yet: a review samples the outputs of stored experiments, so run one on the "
                "Experiments page first.")
        return
    with st.form("create-task"):
        name = st.text_input("Task name", placeholder="left empty: the pair and the experiments")
        chosen = st.multiselect("Experiments", list(experiments), format_func=experiments.get)
        pair = st.selectbox("Texts to compare", list(review.PAIRS), format_func=lambda k: review.PAIRS[k].label)
        cols = st.columns(3)
        n_items = cols[0].number_input("Items", min_value=1, value=20, help="all the prompts there are, if fewer")
        per_item = cols[1].number_input("Annotators per item", min_value=1, value=2)
        seed = cols[2].number_input("Sampling seed", min_value=0, value=0)
        assignment_help = ("each item goes to 'Annotators per item' of them, balanced and seeded; each sees only "
                           "their own items")
        if auth_on():
            annotators = st.multiselect("Annotators", active_annotators(), help=assignment_help, key="task-annotators")
        else:
            names = st.text_input("Annotators (optional)", placeholder="names, comma separated; left empty, anyone "
                                  "who gives a name labels until each item has its labels", help=assignment_help)
            annotators = [n.strip() for n in names.split(",") if n.strip()]
        blind = st.checkbox("Blind", value=True, help="hide which condition each text is, the compressor, the "
                            "ratio and the metrics until the annotator has labelled the item")
        submitted = st.form_submit_button("Create task", type="primary")
    if not submitted:
        return
    if auth_on() and not annotators:  # the picker keeps only names among its options: active annotators
        st.error("Choose the annotators who label this task")
        return
    try:
        task_id = review.create_task(db_url(), name, chosen, pair, int(n_items), int(per_item), int(seed), blind,
                                     annotators)
    except UserError as error:
        st.error(md_escape(error))
        return
    items = tasks()[task_id]["items"]
    fewer = f" (asked for {n_items}: the experiments have no more)" if items < n_items else ""
    where = "in their queue" if auth_on() else f"under 'I am {PARTS['annotate']}'"
    st.success(f"Task #{task_id} created with {items} items{fewer}. Annotators find it {where}.")


# Annotating


def step(key: str, ids: list[int], by: int) -> None:
    """Previous/Next: move the item picker, which a button may only do before the picker is drawn."""
    at = ids.index(st.session_state[key]) + by
    st.session_state[key] = ids[min(max(at, 0), len(ids) - 1)]


def submit(item_id: int, annotator: str, keys: dict[str, str]) -> None:
    """Save the form's answer before the page reruns, so the queue drawn above the form already counts it."""
    answer = {field: st.session_state[key] for field, key in keys.items()}
    try:
        review.save_label(db_url(), item_id, annotator, **answer)
    except UserError as error:
        st.session_state["review-error"] = str(error)
    else:
        st.session_state["review-saved"] = item_id


def label_form(item: dict, annotator: str) -> None:
    own = item["label"] or {}
    # Keyed by item and annotator: a revisited item's form starts from the annotator's own stored label.
    keys = {field: f"{field}-{item['item_id']}-{annotator}"
            for field in ("preference", "faithfulness_a", "faithfulness_b", "tags", "comment")}
    scale = list(review.FAITHFULNESS)
    against = item["context_label"].lower()
    with st.form(f"label-{item['item_id']}-{annotator}"):
        st.radio("Which text is better?", review.PREFERENCES, horizontal=True, format_func=PREFERENCE_LABELS.get,
                 index=review.PREFERENCES.index(own["preference"]) if own else None, key=keys["preference"])
        cols = st.columns(2)
        for column, side in zip(cols, ("a", "b")):
            column.radio(f"Faithfulness of text {side.upper()}", scale, horizontal=True,
                         index=scale.index(own[f"faithfulness_{side}"]) if own else None,
                         key=keys[f"faithfulness_{side}"],
                         help=f"1: contradicts or loses what matters in the {against}; 5: fully faithful to it")
        st.multiselect("Errors", list(review.ERROR_TAGS), default=own.get("tags", []),
                       format_func=review.ERROR_TAGS.get, key=keys["tags"])
        st.text_area("Comment", value=own.get("comment", ""), key=keys["comment"])
        st.form_submit_button("Save my revised label" if own else "Submit", type="primary", on_click=submit,
                              args=(item["item_id"], annotator, keys))
    st.caption("Keyboard: Tab moves between the fields, the arrow keys choose, Enter or Space on the button saves.")
    error = st.session_state.pop("review-error", None)
    if error:
        st.error(md_escape(error))
    elif st.session_state.pop("review-saved", None) == item["item_id"]:
        st.success("Saved. What the texts were is revealed below.")


def revealed_metrics(revealed: dict) -> pd.DataFrame:
    """The hidden metrics of both texts, one row per metric and reference, one column per text."""
    names = {"first": revealed["first_name"], "second": revealed["second_name"]}
    rows: dict[tuple[str, str], dict] = {}
    for key, value in revealed.items():
        side, _, measure = key.partition("_")
        if side in names and "@" in measure:
            metric, reference = measure.split("@")
            rows.setdefault((METRIC_LABELS.get(metric, metric), reference), {})[names[side]] = value
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["metric", "against"])


def show_revealed(revealed: dict) -> None:
    st.subheader("Revealed")
    st.markdown(f"Text A was the **{md_escape(revealed['text_a_is'])}**; "
                f"text B was the **{md_escape(revealed['text_b_is'])}**.")
    cols = st.columns(4)
    cols[0].metric("Compressor", revealed["compressor"])
    cols[1].metric("Ratio asked", f"{revealed['ratio']:g}x")
    achieved = revealed["ratio_achieved"]
    cols[2].metric("Ratio achieved", "n/a" if achieved is None else f"{achieved:.2f}x")
    cols[3].metric("Seed", revealed["seed"])
    st.caption(f"Model {md_escape(revealed['model'])} · experiment #{revealed['experiment_id']} · "
               f"run #{revealed['run_id']} · prompt {md_escape(revealed['source_id'])}")
    if revealed["first_answer"] is not None or revealed["second_answer"] is not None:
        st.text(f"Extracted answers: {revealed['first_name']} {revealed['first_answer'] or '(none)'}, "
                f"{revealed['second_name']} {revealed['second_answer'] or '(none)'}; "
                f"gold {revealed['gold_answer'] or '(none)'}")
    metrics = revealed_metrics(revealed)
    if metrics.empty:
        st.info("No metrics were stored for these texts.")
    else:
        st.dataframe(metrics.style.format("{:.4f}", na_rep="–"), width="stretch")


def annotate_section(signed_in_as: str | None) -> None:
    """The annotator's queue: the signed-in annotator's with authentication on, else whoever gives a name."""
    cols = st.columns([2, 3])
    if signed_in_as is None:
        annotator = cols[0].text_input("Your name", key="annotator", persist_state="session",
                                       max_chars=review.ANNOTATOR_MAX_CHARS,
                                       help="Your labels are kept under this name; you see only your own.")
        if not annotator.strip():
            st.info("Enter your name to see your queue.")
            return
    else:
        annotator = signed_in_as
        cols[0].markdown(f"Labelling as **{md_escape(annotator)}**")
    try:
        stored = {t["id"]: t for t in review.tasks_for(db_url(), annotator)}
    except UserError as error:
        st.error(md_escape(error))
        return
    if not stored:
        st.info("No review task for you yet: a reviewer creates one and gives you items in it.")
        return
    task_id = cols[1].selectbox("Task", list(stored), format_func=lambda i: task_label(stored[i]), key="annotate-task")
    try:
        entries = review.queue(db_url(), task_id, annotator)
    except UserError as error:
        st.error(md_escape(error))
        return
    annotator = annotator.strip()
    if not entries:
        st.info("Nothing left for you in this task: every item has all the labels it asked for.")
        return

    done = sum(e.done for e in entries)
    st.progress(done / len(entries), text=f"{done} of {len(entries)} done")
    ids = [e.item_id for e in entries]
    key = f"review-item-{task_id}-{annotator}"
    if st.session_state.get(key) not in ids:  # resume at the first item this annotator has not labelled
        st.session_state[key] = next((e.item_id for e in entries if not e.done), ids[0])
    marks = {e.item_id: f"Item {e.position + 1}" + (" ✓" if e.done else "") for e in entries}
    cols = st.columns([1, 4, 1], vertical_alignment="bottom")
    cols[0].button("← Previous", on_click=step, args=(key, ids, -1), disabled=st.session_state[key] == ids[0])
    item_id = cols[1].selectbox("Queue (✓ labelled)", ids, format_func=marks.get, key=key)
    cols[2].button("Next →", on_click=step, args=(key, ids, 1), disabled=item_id == ids[-1])

    try:
        item = review.blind_item(db_url(), item_id, annotator)
    except UserError as error:  # the task was deleted since the queue was read
        st.error(md_escape(error))
        return
    st.subheader(f"Item {item['position'] + 1}")
    st.caption(md_escape(item["context_label"]))
    st.html(text_html(item["context"]))
    for column, side in zip(st.columns(2), ("a", "b")):
        with column:
            st.markdown(f"**Text {side.upper()}**")
            st.html(text_html(item[f"text_{side}"]))
    blind = stored[task_id]["blind"]
    if not blind:
        st.caption("This task is not blind: what each text is shows from the start.")
        show_revealed(review.reveal(db_url(), item_id, annotator))
    label_form(item, annotator)
    if blind and item["label"] is not None:  # only once this annotator has answered
        show_revealed(review.reveal(db_url(), item_id, annotator))


# Results


def show_tag_counts(frame: pd.DataFrame) -> None:
    counts = review.tag_counts(frame)
    counts["tag"] = counts["tag"].map(review.ERROR_TAGS)
    st.dataframe(counts, width="stretch", hide_index=True)
    chart = counts.assign(group=counts["compressor"] + " " + counts["ratio"].map("{:g}x".format))
    figure = px.bar(chart, x="tag", y="share", color="group", barmode="group", hover_data=["count", "labels"],
                    labels={"share": "share of labels with the tag", "group": "compressor and ratio", "tag": ""})
    st.plotly_chart(figure, width="stretch")


def results_section() -> None:
    stored = tasks()
    if not stored:
        st.info("No review tasks yet: create one under 'I am a reviewer creating a task'.")
        return
    task_id = st.selectbox("Task", list(stored), format_func=lambda i: task_label(stored[i]), key="results-task")
    task = stored[task_id]
    st.caption(f"{md_escape(task['pair_label'])} · experiment(s) {', '.join(f'#{i}' for i in task['experiment_ids'])}"
               f" · {task['annotators_per_item']} annotator(s) per item · sampling seed {task['seed']} · "
               f"created {task['created_at']}")
    frame = review.labels_frame(db_url(), task_id)
    per_item = frame.groupby("item_id").size()
    cols = st.columns(3)
    cols[0].metric("Labels", len(frame))
    cols[1].metric("Annotators", frame["annotator"].nunique())
    cols[2].metric("Items with all their labels", f"{int((per_item >= task['annotators_per_item']).sum())} "
                                                  f"of {task['items']}")
    if task["annotators"]:
        st.caption("Assigned, balanced and seeded: " + md_escape(", ".join(task["annotators"])))
    st.dataframe(review.annotator_progress(db_url(), task_id), width="stretch", hide_index=True)
    cols = st.columns(2)
    for column, fmt, mime in zip(cols, review.EXPORT_FORMATS, ("text/csv", "application/jsonl")):
        column.download_button(f"Download labels ({fmt.upper()})", review.export_labels(db_url(), task_id, fmt),
                               file_name=f"review-task-{task_id}-labels.{fmt}", mime=mime, key=f"export-{fmt}")
    if frame.empty:
        st.info("No labels yet.")
        return
    with st.expander("Label history (every save, append-only)"):
        history = review.label_history(db_url(), task_id)
        st.dataframe(pd.DataFrame(history), width="stretch", hide_index=True)
        cols = st.columns(2)
        for column, fmt, mime in zip(cols, review.EXPORT_FORMATS, ("text/csv", "application/jsonl")):
            column.download_button(f"Download history ({fmt.upper()})", review.export_history(db_url(), task_id, fmt),
                                   file_name=f"review-task-{task_id}-history.{fmt}", mime=mime,
                                   key=f"history-{fmt}")

    st.subheader("Agreement")
    st.caption("Over the items with two labels or more. Cohen's kappa when exactly two annotators labelled the task; "
               "Krippendorff's alpha in any case (nominal for the preference, ordinal for faithfulness). "
               "Preferences are in terms of the first and the second text, whatever order each annotator saw.")
    st.dataframe(review.agreement(frame), width="stretch", hide_index=True)
    st.subheader("Error tags by compressor and ratio")
    show_tag_counts(frame)
    st.subheader("Human preference and the metrics")
    st.caption("Shares of labels preferring each text, by the second text's BERTScore F1 against the first "
               "(with Spearman's rho against the share preferring the first) and by exact match on the gold answer.")
    st.dataframe(review.preference_vs_metrics(frame), width="stretch", hide_index=True)
    st.subheader("Most disagreed items")
    table = review.disagreements(frame)
    if table.empty:
        st.info("No item has two labels yet.")
    else:
        st.dataframe(table[["position", "compressor", "ratio", "labels", "annotators", "preferences",
                            "preference_entropy", "faithfulness_spread", "context", "first_text", "second_text"]],
                     width="stretch", hide_index=True)
    st.subheader("Every label")
    st.dataframe(frame[["position", "annotator", "preference", "faithfulness_first", "faithfulness_second", "tags",
                        "comment", "compressor", "ratio", "updated_at"]], width="stretch", hide_index=True)


# Annotators' accounts (authentication on)


def invite_days() -> float:
    return float(st.number_input("Invite valid for (days)", min_value=1, max_value=365, value=accounts.INVITE_DAYS))


def show_new_link(name: str, token: str) -> None:
    st.success(f"Invite link for {md_escape(name)}. Copy it now: it is shown once, and only its hash is kept. "
               "Opening it signs them in until it expires; a new link revokes this one.")
    st.code(accounts.invite_link(app_url(), token), language=None)


def accounts_section() -> None:
    with st.form("add-annotator", clear_on_submit=True):
        name = st.text_input("New annotator's name", max_chars=accounts.NAME_MAX_CHARS,
                             help="their labels are kept under this name")
        days = invite_days()
        added = st.form_submit_button("Add annotator and make an invite link", type="primary")
    if added:
        try:
            accounts.create_account(db_url(), name, "annotator")
            show_new_link(name.strip(), accounts.create_invite(db_url(), name, days))
        except UserError as error:
            st.error(md_escape(error))

    annotators = accounts.list_accounts(db_url(), "annotator")
    if not annotators:
        st.info("No annotators yet.")
        return
    st.dataframe(pd.DataFrame([{"annotator": a["name"], "active": a["active"],
                                "invite": a["invites"][0]["status"] if a["invites"] else "none",
                                "expires": a["invites"][0]["expires_at"] if a["invites"] else None,
                                "last used": a["invites"][0]["last_used_at"] if a["invites"] else None}
                               for a in annotators]), width="stretch", hide_index=True)
    chosen = st.selectbox("Annotator", [a["name"] for a in annotators], key="manage-annotator")
    active = next(a["active"] for a in annotators if a["name"] == chosen)
    days = invite_days()
    cols = st.columns(3)
    try:
        if cols[0].button("New invite link", disabled=not active):
            show_new_link(chosen, accounts.create_invite(db_url(), chosen, days))
        if cols[1].button("Revoke invite links"):
            revoked = accounts.revoke_invites(db_url(), chosen)
            st.success(f"Revoked {revoked} link(s); sessions they opened end at their next click.")
        if cols[2].button("Disable account" if active else "Enable account"):
            accounts.set_active(db_url(), chosen, not active)
            st.rerun()
    except UserError as error:  # the account was removed from another session meanwhile
        st.error(md_escape(error))


st.title("Review")
st.caption("Annotators judge two texts of a prompt blind, as A and B in an order fixed per item and annotator: "
           "what the texts are stays hidden until they have answered. Reviewers create tasks and read the results.")
if not auth_on():  # one person on their own machine plays every part
    part = st.radio("I am …", list(PARTS), format_func=PARTS.get, horizontal=True, key="review-part",
                    persist_state="session")
    {"annotate": lambda: annotate_section(None), "create": create_section, "results": results_section}[part]()
elif (who := signed_in()) is None:
    st.error("Sign in first.")
elif not who.is_reviewer:
    annotate_section(who.name)
else:
    part = st.radio("Part", list(REVIEWER_PARTS), format_func=REVIEWER_PARTS.get, horizontal=True,
                    key="review-reviewer-part", label_visibility="collapsed", persist_state="session")
    {"create": create_section, "results": results_section, "accounts": accounts_section}[part]()
