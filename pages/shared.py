"""What every page shares: the database URL, the worker, and the side-by-side view of a run."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import select

from core import accounts, paths, render
from core.pipeline import infill
from core.pipeline.conditions import RECONSTRUCTIONS
from core.pipeline.service import is_shipped
from core.errors import UserError
from core.pipeline.worker import Worker, in_process_worker
from db.models import Experiment
from db.queries import experiment_states, item_view, run_view, sampler_label
from db.session import session_scope


def db_url() -> str:
    return paths.db_url()


# Who is signed in. The identity lives in session state under a key no widget uses, set only by signing in,
# and is checked against the database on every rerun: the browser never sends it.
SIGNED_IN = "_compresslens_signed_in"


def auth_on() -> bool:
    return accounts.auth_enabled(st.get_option("server.address"))


def sign_in_from_link() -> str | None:
    """Sign in with an invite link's token (``?invite=``) and take it out of the address bar, whether or not it
    is valid; returns why it was refused, if it was."""
    token = st.query_params.get("invite")
    if token is None:
        return None
    del st.query_params["invite"]
    try:
        st.session_state[SIGNED_IN] = accounts.redeem(db_url(), token)
    except UserError as error:
        return str(error)
    return None


def signed_in() -> accounts.SignedIn | None:
    """This session's identity as the database has it now; None when no one is signed in or it lapsed."""
    held = st.session_state.get(SIGNED_IN)
    if not isinstance(held, accounts.SignedIn):
        return None
    current = accounts.still_valid(db_url(), held)
    if current is None:
        del st.session_state[SIGNED_IN]
    return current


def sign_out() -> None:
    st.session_state.pop(SIGNED_IN, None)


def app_url() -> str:
    """The dashboard's address as people reach it, for invite links: COMPRESSLENS_PUBLIC_URL, else the origin
    this browser used and the server's base path."""
    if os.environ.get("COMPRESSLENS_PUBLIC_URL") or not st.context.url:
        return accounts.app_url()
    parts = urlsplit(st.context.url)
    return f"{parts.scheme}://{parts.netloc}/{(st.get_option('server.baseUrlPath') or '').strip('/')}".rstrip("/")


def model_card(model_id: str, family) -> None:
    """What a model's diffusion family is, its context, the presets that match its papers, and which fast modes
    apply; ``family`` None: a model of no family known here."""
    from core.llada.sampler import PRESETS

    if is_shipped(model_id):
        st.caption("One of CompressLens's own small models, in LLaDA's layout: it decodes with LLaDA's sampler, every "
                   "fast mode applies, and its preset is the one it was measured with.")
        return
    if family is None:
        st.caption("No diffusion family known for this model (it is not downloaded here, or it is a causal LM, "
                   "which runs as the autoregressive control).")
        return
    with st.expander(f"Model card: {family.title}"):
        st.markdown(render.md_escape(family.about))
        st.markdown(f"**Context:** {family.context}  \n**Published checkpoints:** "
                    + ", ".join(f"`{c}`" for c in family.checkpoints))
        st.markdown("**Presets from its papers:** " + "; ".join(f"`{p}` ({PRESETS[p][0]})" for p in family.presets))
        st.markdown("**Fast modes:**\n" + "\n".join(f"- {mode}: {verdict}"
                                                     for mode, verdict in family.fast_modes.items()))


def require_reviewer() -> None:
    """Stop the page unless this session may see reviewer views: anyone with authentication off, only a
    signed-in reviewer with it on. Navigation already hides these pages from others; this holds whatever
    page a session asks for."""
    if not auth_on():
        return
    who = signed_in()
    if who is None or not who.is_reviewer:
        st.error("This page is for reviewers. " + ("Sign in first." if who is None else
                                                   "As an annotator you have the Review page."))
        st.stop()


@st.cache_resource(show_spinner=False)
def _worker_for(url: str) -> Worker:
    return Worker(url)


def get_worker() -> Worker:
    """One worker per server process and database; it survives reruns, reloads and closed tabs.

    ``start`` is a no-op while its thread lives and brings it back if it ever died. With
    COMPRESSLENS_WORKER=off it is never started: a `python -m core worker` process runs the jobs.
    """
    worker = _worker_for(db_url())
    return worker.start() if in_process_worker() else worker


def experiment_labels() -> dict[int, str]:
    """Every stored experiment, newest first, as the pickers show it."""
    with session_scope(db_url()) as session:
        experiments = session.scalars(select(Experiment).order_by(Experiment.id.desc())).all()
        states = experiment_states(session, [e.id for e in experiments])
        return {e.id: f"#{e.id} {e.name} ({states[e.id]['status']}, {states[e.id]['done']}/{e.total_units})"
                for e in experiments}


def load_view(run_id: int) -> dict | None:
    with session_scope(db_url()) as session:
        try:
            return run_view(session, run_id)
        except KeyError:
            return None


def load_item_view(run_id: int, source_id: str) -> dict | None:
    with session_scope(db_url()) as session:
        try:
            return item_view(session, run_id, source_id)
        except KeyError:
            return None


CONDITION_TITLES = {"reconstructed": "Reconstruction asked by instruction",
                    "reasoning_on_reconstructed": "Output on the reconstructed prompt",
                    "infilled": "Reconstruction by infill (masks where words were dropped)",
                    "reasoning_on_infilled": "Output on the infilled prompt"}


def show_run(view: dict) -> None:
    model = view["model"]
    for note in model["notes"]:
        st.warning(note, icon=":material/warning:")
    where = f"Run #{view['run_id']}"
    if view["experiment_id"] is not None:
        where = f"Experiment #{view['experiment_id']} · run #{view['run_id']} · prompt {render.md_escape(view['source_id'])}"
    st.caption(
        f"{where} · {view['created_at']} · model {render.md_escape(model['id'])} "
        f"({model['parameters']:,} parameters, "
        f"{model['device']}, {model['dtype']}) · preset {view['preset']} · sampler {sampler_label(view['sampler'])} "
        f"· seed {view['seed']}"
    )
    ratio = st.columns(4)
    ratio[0].metric("Ratio asked", f"{view['ratio_requested']:g}x")
    ratio[1].metric("Ratio achieved", f"{view['ratio_achieved']:.2f}x")
    ratio[2].metric("Prompt tokens (model)", f"{view['prompt_tokens']['original']} → {view['prompt_tokens']['compressed']}")
    gpt = view["prompt_tokens_cl100k"]
    ratio[3].metric("Prompt tokens (GPT-4 cl100k)",
                    f"{gpt['original']} → {gpt['compressed']}" if gpt["original"] is not None else "n/a")

    left, right = st.columns(2)
    with left:
        st.subheader("Original prompt")
        st.caption("Words the compressor dropped are struck through.")
        st.html(render.marked_prompt_html(view["original_prompt"], view["words"]))
    with right:
        st.subheader(f"Compressed prompt ({view['compressor']})")
        shown = ", ".join(f"{k}={v!r}" for k, v in view["compressor_params"].items())
        if view.get("compress_forward_passes"):
            shown += f" · {view['compress_forward_passes']} forward passes of the model it asked"
        st.caption(render.md_escape(shown) if shown else "no parameters")
        st.html(render.text_html(view["compressed_prompt"]))

    left, right = st.columns(2)
    for column, name, title in ((left, "original", "Output on the original prompt"),
                                (right, "compressed", "Output on the compressed prompt")):
        with column:
            st.subheader(title)
            answer = view["extracted_answers"][name]
            gold = view["gold_answer"]
            if view["task"] == "math":
                verdict = ""
                if gold is not None:
                    verdict = " (correct)" if answer == gold else f" (wrong; gold {gold})"
                st.text(f"Extracted answer: {answer if answer is not None else '(none)'}{verdict}")
            st.html(render.text_html(view[f"{name}_output"]))

    st.subheader("Word-level diff of the outputs")
    trajectories = view.get("trajectories") or {}
    tokens_known = all(trajectories.get(name) for name in ("original", "compressed"))
    if tokens_known and st.toggle("By the model's own tokens", key=f"token-diff-{view['run_id']}",
                                  help="What the model commits step by step are tokens; their boundaries are drawn."):
        st.html(render.token_diff_html(*(render.until_end(trajectories[name]["piece"])
                                         for name in ("original", "compressed"))))
    else:
        pieces = render.word_diff(view["original_output"], view["compressed_output"])
        stats = render.diff_stats(pieces)
        st.caption(f"{stats['same']} words shared · {stats['del']} only in the original-prompt output (red) · "
                   f"{stats['ins']} only in the compressed-prompt output (green)")
        st.html(render.diff_html(view["original_output"], view["compressed_output"]))
    if tokens_known:
        show_trajectories(view)

    st.subheader("Metrics")
    rows = render.metrics_rows(view)
    if rows:
        show_metrics(view, rows)
    else:
        st.info("No metrics stored for this run.")
    show_compute(view)
    show_other_conditions(view)


def show_compute(view: dict) -> None:
    """What each output cost: the shorter prompt's saving is in the token positions the model computed."""
    compute = view.get("compute") or {}
    if not all(c.get("tokens_processed") for c in compute.values()):
        return
    table = pd.DataFrame({name: {"prompt tokens": c["prompt_tokens"], "forward passes": c["forward_passes"],
                                 "token positions computed": c["tokens_processed"],
                                 "peak GPU memory (MiB)": (c["peak_memory_bytes"] / 2**20
                                                           if c["peak_memory_bytes"] else None),
                                 "seconds (batch)": c["seconds"]}
                          for name, c in compute.items()})
    saved = 1 - compute["compressed"]["tokens_processed"] / compute["original"]["tokens_processed"]
    st.subheader("Compute")
    st.caption(f"The compressed prompt saved {saved:.0%} of the token positions the model computed over all its "
               "forward passes (padding not counted). Both outputs ran in one batch, so they share its time and memory.")
    st.dataframe(table, width="stretch")


def show_trajectories(view: dict) -> None:
    """When each answer token was committed and how sure the model was, on a common step axis."""
    st.subheader("How the answers settled, step by step")
    st.caption("Each cell is a token of the answer, coloured by the step that committed it (hover: the token and "
               "the model's probability of it then). Below, the canvas as it stood after the chosen step.")
    trajectories = {name: view["trajectories"][name] for name in ("original", "compressed")}
    last = max(max(t["step"]) for t in trajectories.values())
    names = list(trajectories)
    figure = go.Figure(go.Heatmap(
        z=[t["step"] for t in trajectories.values()], y=[f"on the {n} prompt" for n in names],
        customdata=[list(zip(t["piece"], t["prob"])) for t in trajectories.values()],
        hovertemplate="token %{x}: %{customdata[0]}<br>step %{z}, probability %{customdata[1]:.2f}<extra></extra>",
        colorscale="Viridis", colorbar={"title": "commit step"}, zmin=0, zmax=last))
    figure.update_layout(height=220, margin={"t": 10, "b": 30}, xaxis_title="answer token")
    st.plotly_chart(figure, width="stretch", key=f"trajectory-{view['run_id']}")
    step = st.slider("Canvas after step", min_value=1, max_value=max(last, 2), value=last,
                     key=f"trajectory-step-{view['run_id']}")
    for column, name in zip(st.columns(2), names):
        with column:
            committed = sum(1 for s in trajectories[name]["step"] if 0 < s <= step)
            st.caption(f"On the {name} prompt: {committed} of {len(trajectories[name]['step'])} tokens committed")
            st.html(render.canvas_html(trajectories[name], step))


def show_metrics(view: dict, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    table = frame.pivot(index="metric", columns="comparison", values="value")
    st.dataframe(table.style.format("{:.4f}", na_rep="–"), width="stretch")
    st.caption(f"BERTScore backbone: {view['bertscore_backbone']}. BLEU is sacrebleu's sentence BLEU (0-100); "
               "ROUGE is F-measure with stemming; exact match compares extracted final answers.")
    chart = frame.assign(value=[v / 100 if k == "bleu" else v for k, v in zip(frame["key"], frame["value"])])
    figure = px.bar(chart, x="metric", y="value", color="comparison", barmode="group",
                    labels={"value": "score (BLEU / 100)"}, range_y=[0, 1.05])
    st.plotly_chart(figure, width="stretch")


def show_other_conditions(view: dict) -> None:
    """The further conditions of this prompt: the reconstructions side by side (instruction and infill),
    each word that brings back a dropped one coloured, then the outputs on them."""
    rebuilt = [c for c in view["other_conditions"] if c["name"] in RECONSTRUCTIONS]
    if rebuilt:
        st.subheader("Reconstructions of the original prompt")
        st.caption("Green: a word the compressor dropped, brought back. Amber: a word the original prompt does not "
                   "hold. The share restored counts each dropped word once, after the kept words claim theirs.")
        for column, condition in zip(st.columns(len(rebuilt)), rebuilt):
            with column:
                st.markdown(f"**{CONDITION_TITLES[condition['name']]}**")
                st.caption("Given to the model")
                st.html(render.text_html(condition["prompt"]))
                st.caption("Reconstruction")
                st.html(render.reconstruction_html(infill.marked(view["words"], condition["output"])))
                show_condition_scores(condition)
    for condition in view["other_conditions"]:
        if condition in rebuilt:
            continue
        st.subheader(CONDITION_TITLES.get(condition["name"], condition["name"]))
        left, right = st.columns(2)
        with left:
            st.caption("Prompt the model was given")
            st.html(render.text_html(condition["prompt"]))
        with right:
            st.caption("Its output")
            if condition["extracted_answer"] is not None:
                st.text(f"Extracted answer: {condition['extracted_answer']}")
            st.html(render.text_html(condition["output"]))
        show_condition_scores(condition)


def show_condition_scores(condition: dict) -> None:
    scores = [{"against": reference, **values} for reference, values in condition["metrics"].items()]
    if scores:
        st.dataframe(pd.DataFrame(scores).set_index("against"), width="stretch")
