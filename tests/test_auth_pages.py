"""Roles through the pages (AppTest): authentication off as on one's own machine; on, a reviewer signed in by
password and an annotator by invite link, and an annotator's session forging what it sends."""

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import accounts
from core.evaluation import review
from db.models import ReviewAssignment, ReviewLabel, ReviewTask
from db.session import session_scope
from pages.shared import SIGNED_IN
from test_review import add_experiment
from test_review_page import page_text

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
PASSWORD = "correct horse battery"
PAIR = "output_original_vs_compressed"
READER_PAGES = ("playground", "experiments", "results", "history")


@pytest.fixture
def auth(monkeypatch, app_navigation, db_url, tiny_checkpoint):
    monkeypatch.setenv("COMPRESSLENS_AUTH", "on")
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    return db_url


def app(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def titles(at) -> list[str]:
    return [t.value for t in at.title]


def sign_in(at, name, password) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def page_names(at) -> set[str]:
    return {Path(info["script_path"]).stem for info in at._registered_pages.values()}


def test_with_authentication_off_one_person_has_every_page_and_every_part(monkeypatch, app_navigation, db_url,
                                                                        tiny_checkpoint):
    monkeypatch.setenv("COMPRESSLENS_MODEL", str(tiny_checkpoint))
    at = app()
    assert titles(at) == ["Playground"] and "Sign in" not in page_text(at)
    assert page_names(at) == {*READER_PAGES, "review"}
    at.switch_page("pages/review.py").run()
    assert at.radio(key="review-part").options == ["an annotator", "a reviewer creating a task",
                                                   "a reviewer reading results"]


@pytest.mark.parametrize("address, signs_in", [("localhost", False), ("127.0.0.1", False), ("0.0.0.0", True)])
def test_left_to_auto_authentication_follows_the_address_the_server_listens_on(monkeypatch, app_navigation, db_url,
                                                                             address, signs_in):
    monkeypatch.setenv("COMPRESSLENS_AUTH", "auto")
    before = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        at = app()
    finally:
        config.set_option("server.address", before)
    assert (titles(at) == ["Sign in"]) is signs_in


def test_a_reviewer_signs_in_with_a_password_manages_annotators_and_assigns_a_task(auth):
    db_url = auth
    at = app()
    assert titles(at) == ["Sign in"] and page_names(at) == {"sign_in"}
    assert "python -m core users add NAME --role reviewer" in at.warning[0].value  # no reviewer yet
    accounts.create_account(db_url, "Ada", "reviewer", PASSWORD)
    sign_in(at, "Ada", PASSWORD + "x")
    assert at.error[0].value == "Wrong name or password" and titles(at) == ["Sign in"]
    sign_in(at, "Ada", PASSWORD)
    assert titles(at) == ["Playground"] and page_names(at) == {*READER_PAGES, "review"}
    assert any(c.value == "Signed in as **Ada** (reviewer)" for c in at.sidebar.caption)
    assert any(c.value.startswith("Device:") for c in at.sidebar.caption)
    for name in READER_PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception and titles(at) == [name.capitalize()] and not at.error

    at.switch_page("pages/review.py").run()
    at.radio(key="review-reviewer-part").set_value("accounts").run()
    links = {}
    for name in ("Ben", "Cleo"):
        at.text_input[0].input(name)
        next(b for b in at.button if b.label.startswith("Add annotator")).click().run()
        assert at.success[0].value.startswith(f"Invite link for {name}")
        link = urlsplit(at.code[0].value)
        assert (link.scheme, link.netloc, link.path) == ("http", "localhost:8501", "/")
        links[name] = parse_qs(link.query)["invite"][0]
    assert {accounts.redeem(db_url, token).name for token in links.values()} == {"Ben", "Cleo"}
    assert at.dataframe[0].value["annotator"].tolist() == ["Ben", "Cleo"]

    experiment_id, _ = add_experiment(db_url)
    at.radio(key="review-reviewer-part").set_value("create").run()
    assert at.multiselect[1].options == ["Ben", "Cleo"]
    at.multiselect[0].set_value([experiment_id])
    at.number_input[0].set_value(4)
    next(b for b in at.button if b.label == "Create task").click().run()
    assert at.error[0].value == "Choose the annotators who label this task"
    at.session_state["task-annotators"] = ["Ben", "Mallory"]  # a session may send a name that is no annotator's
    next(b for b in at.button if b.label == "Create task").click().run()
    assert at.error[0].value.startswith("Each item asks for 2 annotators but the task names 1")  # Mallory dropped
    with session_scope(db_url) as session:
        assert session.query(ReviewTask).count() == 0
    at.multiselect[1].set_value(["Ben", "Cleo"])
    next(b for b in at.button if b.label == "Create task").click().run()
    assert at.success[0].value.startswith("Task #1 created with 4 items") and "in their queue" in at.success[0].value
    with session_scope(db_url) as session:
        assert session.query(ReviewAssignment).count() == 8  # two annotators per item, both of them on each

    at.radio(key="review-reviewer-part").set_value("results").run()
    progress = at.dataframe[0].value
    assert progress.to_dict("list") == {"annotator": ["Ben", "Cleo"], "assigned": [4, 4], "labelled": [0, 0]}
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert titles(at) == ["Sign in"]


@pytest.fixture
def assigned(auth):
    """A reviewer, three annotators with invite links and a blind task giving each item to two of them."""
    db_url = auth
    accounts.create_account(db_url, "Ada", "reviewer", PASSWORD)
    links = {}
    for name in ("Ben", "Cleo", "Dan"):
        accounts.create_account(db_url, name, "annotator")
        links[name] = accounts.create_invite(db_url, name)
    experiment_id, _ = add_experiment(db_url)
    task_id = review.create_task(db_url, "blind", [experiment_id], PAIR, 6, 2, 3, annotators=["Ben", "Cleo", "Dan"])
    with session_scope(db_url) as session:
        pairs = session.query(ReviewAssignment.item_id, ReviewAssignment.annotator).all()
    own = {name: sorted(i for i, who in pairs if who == name) for name in links}
    return db_url, task_id, links, own


def test_an_invite_link_signs_an_annotator_in_to_their_own_queue_only(assigned):
    db_url, task_id, links, own = assigned
    at = app(invite=links["Ben"])
    assert dict(at.query_params) == {}  # the token left the address bar
    assert titles(at) == ["Review"] and page_names(at) == {"review"}
    assert any(c.value == "Signed in as **Ben** (annotator)" for c in at.sidebar.caption)
    assert not any(c.value.startswith(("Device:", "Database:")) for c in at.sidebar.caption)
    with pytest.raises(ValueError):  # no other page is registered for this session
        at.switch_page("pages/results.py")
    key = f"review-item-{task_id}-Ben"
    assert at.selectbox(key=key).options == [f"Item {p + 1}" for p in positions(db_url, own["Ben"])]
    assert at.get("progress")[0].proto.text == f"0 of {len(own['Ben'])} done"
    text = page_text(at)
    assert "Revealed" not in text and "random" not in text and "Ratio asked" not in text  # blind before the label

    item_id = at.selectbox(key=key).value
    at.radio(key=f"preference-{item_id}-Ben").set_value("tie")
    for side in "ab":
        at.radio(key=f"faithfulness_{side}-{item_id}-Ben").set_value(3)
    next(b for b in at.button if b.label == "Submit").click().run()
    assert not at.exception and at.success[0].value.startswith("Saved")
    assert "Revealed" in {s.value for s in at.subheader}
    with session_scope(db_url) as session:
        assert [(label.item_id, label.annotator) for label in session.query(ReviewLabel)] == [(item_id, "Ben")]


def positions(db_url, item_ids) -> list[int]:
    from db.models import ReviewItem

    with session_scope(db_url) as session:
        return [session.get(ReviewItem, i).position for i in item_ids]


def test_an_annotators_session_forging_reviewer_views_or_anothers_items_is_refused(assigned):
    db_url, task_id, links, own = assigned
    at = app(invite=links["Ben"])
    foreign = next(i for i in own["Cleo"] if i not in own["Ben"])
    with session_scope(db_url) as session:
        from db.models import ReviewItem

        foreign_texts = {session.get(ReviewItem, foreign).first_text, session.get(ReviewItem, foreign).second_text}

    at.session_state["review-reviewer-part"] = "results"  # the reviewer's part picker, never drawn for Ben
    at.session_state["review-part"] = "results"  # the one-person install's picker
    at.session_state["annotator"] = "Cleo"  # the one-person install's name box
    at.run()
    assert not at.exception, at.exception
    text = page_text(at)
    assert "Labelling as **Ben**" in text and "Download labels" not in text and "Label history" not in text
    assert at.selectbox(key=f"review-item-{task_id}-Ben").options == [f"Item {p + 1}"
                                                                      for p in positions(db_url, own["Ben"])]
    assert not any(t in text for t in foreign_texts)
    # The queue picker offers only Ben's items and Streamlit takes no value outside a picker's options; the core
    # refuses another's item whatever asks for it (test_accounts).

    reviewer = app()
    sign_in(reviewer, "Ada", PASSWORD)
    results_hash = next(h for h, info in reviewer._registered_pages.items()
                        if Path(info["script_path"]).stem == "results")
    at._page_hash = results_hash  # what the browser sends to open /results
    at.run()
    assert titles(at) == ["Review"] and "Download labels" not in page_text(at)

    at.session_state[SIGNED_IN] = {"account_id": 1, "name": "Ada", "role": "reviewer"}  # not the server's identity
    at.run()
    assert titles(at) == ["Sign in"]


def test_revoking_an_invite_or_disabling_an_account_ends_the_session_at_its_next_click(assigned):
    db_url, _, links, _ = assigned
    ben, cleo = app(invite=links["Ben"]), app(invite=links["Cleo"])
    accounts.revoke_invites(db_url, "Ben")
    accounts.set_active(db_url, "Cleo", False)
    for at in (ben, cleo):
        at.run()
        assert titles(at) == ["Sign in"] and page_names(at) == {"sign_in"}
    at = app(invite=links["Ben"])
    assert titles(at) == ["Sign in"] and at.error[0].value.startswith("This invite link is not valid")
    assert dict(at.query_params) == {}


@pytest.mark.parametrize("page", READER_PAGES)
def test_a_reader_page_opened_by_an_annotators_session_shows_nothing_but_a_refusal(assigned, page):
    db_url, _, links, _ = assigned
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=60)
    at.session_state[SIGNED_IN] = accounts.redeem(db_url, links["Dan"])
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["This page is for reviewers. As an annotator you have the Review page."]
    assert not at.title and not at.dataframe and not at.button
