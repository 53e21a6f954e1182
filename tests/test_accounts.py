"""Accounts, passwords, invite links and the balanced assignment of review items (core.accounts, core.evaluation.review)."""

import hashlib
import io
import sys
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from core import accounts
from core.errors import UserError
from core.evaluation import review
from db.models import Account, Invite, ReviewAssignment, ReviewItem, ReviewLabel, ReviewTask, utcnow
from db.session import get_engine, session_scope
from test_review import add_experiment

PASSWORD = "correct horse battery"


@pytest.mark.parametrize("setting, address, enabled", [
    ("off", "0.0.0.0", False), ("on", "localhost", True), ("auto", "localhost", False), ("auto", "127.0.0.1", False),
    ("auto", "[::1]", False), ("auto", "0.0.0.0", True), ("auto", "10.1.2.3", True), (None, None, True),
    (None, "localhost", False), ("ON", "localhost", True)])
def test_authentication_is_on_when_asked_or_when_the_server_listens_beyond_localhost(monkeypatch, setting, address,
                                                                                     enabled):
    if setting is None:
        monkeypatch.delenv("COMPRESSLENS_AUTH")
    else:
        monkeypatch.setenv("COMPRESSLENS_AUTH", setting)
    assert accounts.auth_enabled(address) is enabled


def test_an_unknown_authentication_setting_is_a_message(monkeypatch):
    monkeypatch.setenv("COMPRESSLENS_AUTH", "yes")
    with pytest.raises(UserError, match="COMPRESSLENS_AUTH must be on, off or auto"):
        accounts.auth_enabled("localhost")


def stored_account(db_url, name) -> Account:
    with session_scope(db_url) as session:
        return session.scalar(select(Account).where(Account.name == name))


def test_passwords_are_argon2id_hashes_and_any_failure_reads_the_same(db_url):
    accounts.create_account(db_url, "Ada", "reviewer", PASSWORD)
    stored = stored_account(db_url, "Ada")
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    assert accounts.authenticate(db_url, " Ada ", PASSWORD) == accounts.SignedIn(stored.id, "Ada", "reviewer")
    accounts.create_account(db_url, "Ben", "annotator")  # invite only: no password to guess
    for name, password in (("Ada", PASSWORD + "!"), ("Nobody", PASSWORD), ("Ben", ""), ("", "")):
        with pytest.raises(UserError) as refused:
            accounts.authenticate(db_url, name, password)
        assert str(refused.value) == "Wrong name or password"
    accounts.set_active(db_url, "Ada", False)
    with pytest.raises(UserError, match="Wrong name or password"):
        accounts.authenticate(db_url, "Ada", PASSWORD)


@pytest.mark.parametrize("name, role, password, message", [
    ("Ada", "reviewer", None, "A reviewer signs in with a password"),
    ("Ada", "reviewer", "short", "at least 10 characters"),
    ("Ada", "admin", PASSWORD, "A role is one of reviewer, annotator"),
    ("   ", "annotator", None, "Give a name"),
    ("x" * 81, "annotator", None, "at most 80 characters"),
])
def test_bad_accounts_are_refused_with_a_message_and_nothing_stored(db_url, name, role, password, message):
    with pytest.raises(UserError, match=message):
        accounts.create_account(db_url, name, role, password)
    assert accounts.list_accounts(db_url) == []


def test_a_name_is_taken_once(db_url):
    accounts.create_account(db_url, "Ada", "annotator")
    with pytest.raises(UserError, match="already an account named 'Ada'"):
        accounts.create_account(db_url, "Ada", "reviewer", PASSWORD)


def test_an_invite_keeps_only_the_hash_of_its_token_and_signs_its_annotator_in(db_url):
    ben = accounts.create_account(db_url, "Ben", "annotator")
    token = accounts.create_invite(db_url, "Ben", days=2)
    assert len(token) >= 43  # 32 random bytes
    with session_scope(db_url) as session:
        invite = session.scalar(select(Invite))
        assert invite.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert invite.expires_at - invite.created_at == timedelta(days=2) and invite.last_used_at is None
    with get_engine(db_url).connect() as conn:  # the token itself is in no column of any table
        for table in ("accounts", "invites"):
            assert token not in str(conn.execute(text(f"SELECT * FROM {table}")).all())
    signed_in = accounts.redeem(db_url, token)
    assert (signed_in.account_id, signed_in.role, signed_in.invite_id) == (ben.account_id, "annotator", invite.id)
    assert accounts.redeem(db_url, token) == signed_in  # the link works again until it expires
    assert accounts.list_accounts(db_url)[0]["invites"][0]["last_used_at"] is not None
    assert accounts.still_valid(db_url, signed_in) == signed_in


def test_an_expired_revoked_or_replaced_invite_signs_no_one_in_and_ends_its_sessions(db_url):
    accounts.create_account(db_url, "Ben", "annotator")
    first = accounts.create_invite(db_url, "Ben")
    session_by_first = accounts.redeem(db_url, first)
    second = accounts.create_invite(db_url, "Ben")  # a new link revokes the earlier one
    refused = "This invite link is not valid"
    with pytest.raises(UserError, match=refused):
        accounts.redeem(db_url, first)
    assert accounts.still_valid(db_url, session_by_first) is None
    session_by_second = accounts.redeem(db_url, second)

    with session_scope(db_url) as session:
        session.execute(update(Invite).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(UserError, match=refused):
        accounts.redeem(db_url, second)
    assert accounts.still_valid(db_url, session_by_second) is None

    third = accounts.create_invite(db_url, "Ben")
    session_by_third = accounts.redeem(db_url, third)
    assert accounts.revoke_invites(db_url, "Ben") == 1
    assert accounts.still_valid(db_url, session_by_third) is None
    assert [i["status"] for i in accounts.list_accounts(db_url)[0]["invites"]] == ["revoked", "expired", "revoked"]
    for forged in ("", "x" * 500, first[:-1], None):
        with pytest.raises(UserError, match=refused):
            accounts.redeem(db_url, forged)
    with pytest.raises(UserError, match="more than 0 and at most 365 days"):
        accounts.create_invite(db_url, "Ben", days=0)


def test_disabling_an_account_ends_its_sessions_and_its_invites(db_url):
    accounts.create_account(db_url, "Ada", "reviewer", PASSWORD)
    accounts.create_account(db_url, "Ben", "annotator")
    token = accounts.create_invite(db_url, "Ben")
    ada, ben = accounts.authenticate(db_url, "Ada", PASSWORD), accounts.redeem(db_url, token)
    accounts.set_active(db_url, "Ada", False)
    accounts.set_active(db_url, "Ben", False)
    assert accounts.still_valid(db_url, ada) is None and accounts.still_valid(db_url, ben) is None
    with pytest.raises(UserError, match="not valid"):
        accounts.redeem(db_url, token)
    accounts.set_active(db_url, "Ben", True)
    assert accounts.still_valid(db_url, ben) == ben
    # A session that claims a role its account does not have is over.
    assert accounts.still_valid(db_url, accounts.SignedIn(ben.account_id, "Ben", "reviewer", ben.invite_id)) is None
    assert accounts.has_reviewer(db_url) is False


@settings(max_examples=200, deadline=None)
@given(n_items=st.integers(0, 60), n_annotators=st.integers(1, 9), data=st.data())
def test_assignment_gives_each_item_exactly_its_annotators_and_balances_the_load(n_items, n_annotators, data):
    per_item = data.draw(st.integers(1, n_annotators))
    seed = data.draw(st.integers(0, 2**31))
    names = [f"annotator {i}" for i in range(n_annotators)]
    plan = review.assign(n_items, names, per_item, seed)
    assert len(plan) == n_items
    assert all(len(set(assigned)) == per_item and set(assigned) <= set(names) for assigned in plan)
    load = Counter(name for assigned in plan for name in assigned)
    assert max(load[n] for n in names) - min(load[n] for n in names) <= 1
    assert review.assign(n_items, list(reversed(names)), per_item, seed) == plan  # seeded, whatever the order given


def test_assignment_depends_on_the_seed_and_refuses_too_few_annotators():
    names = ["Ada", "Ben", "Cleo", "Dan"]
    assert review.assign(8, names, 2, 0) != review.assign(8, names, 2, 1)
    with pytest.raises(UserError, match="asks for 3 annotators but the task names 2"):
        review.assign(4, names[:2], 3, 0)


@pytest.fixture
def reviewed(db_url):
    """Four items of a stored experiment, in a task that assigns each to two of three annotators."""
    experiment_id, _ = add_experiment(db_url)
    return review.create_task(db_url, "assigned", [experiment_id], "output_original_vs_compressed", 4, 2, 7,
                              annotators=["Cleo", "Ada", "Ben", "Ada"])


def test_an_assigned_task_shows_each_annotator_only_their_items_and_refuses_the_rest(db_url, reviewed):
    task = next(t for t in review.list_tasks(db_url) if t["id"] == reviewed)
    assert task["annotators"] == ["Ada", "Ben", "Cleo"]
    with session_scope(db_url) as session:
        items = session.scalars(select(ReviewItem.id).where(ReviewItem.task_id == reviewed)).all()
        pairs = session.execute(select(ReviewAssignment.item_id, ReviewAssignment.annotator)).all()
    own = {name: {item for item, who in pairs if who == name} for name in ("Ada", "Ben", "Cleo")}
    assert sorted(map(len, own.values())) == [2, 3, 3] and all(Counter(i for i, _ in pairs)[i] == 2 for i in items)
    for name in own:
        assert {e.item_id for e in review.queue(db_url, reviewed, name)} == own[name]
    assert review.queue(db_url, reviewed, "Eve") == [] and review.tasks_for(db_url, "Eve") == []

    foreign = next(iter(set(items) - own["Ada"]))
    answer = dict(preference="A", faithfulness_a=4, faithfulness_b=2, tags=[], comment="")
    for refused in (lambda: review.blind_item(db_url, foreign, "Ada"), lambda: review.reveal(db_url, foreign, "Ada"),
                    lambda: review.save_label(db_url, foreign, "Ada", **answer)):
        with pytest.raises(UserError, match=f"Review item #{foreign} is not in your queue"):
            refused()
    with session_scope(db_url) as session:
        assert session.query(ReviewLabel).count() == 0

    for name, assigned in own.items():  # everyone labels everything they were given
        for item_id in assigned:
            review.save_label(db_url, item_id, name, **answer)
    frame = review.labels_frame(db_url, reviewed)
    assert frame.groupby("item_id").size().tolist() == [2, 2, 2, 2]  # exactly the task's number per item
    progress = review.annotator_progress(db_url, reviewed).set_index("annotator")
    assert (progress["assigned"] == progress["labelled"]).all() and progress["assigned"].sum() == 8


def test_a_task_asking_more_annotators_per_item_than_it_names_stores_nothing(db_url):
    experiment_id, _ = add_experiment(db_url)
    with pytest.raises(UserError, match="asks for 3 annotators but the task names 2"):
        review.create_task(db_url, "", [experiment_id], "output_original_vs_compressed", 4, 3, 0,
                           annotators=["Ada", "Ben"])
    with session_scope(db_url) as session:
        assert session.query(ReviewTask).count() == 0


@pytest.fixture
def cli(db_url, monkeypatch, capsys):
    """`python -m core users --db URL ...` in this process: (exit code, stdout, stderr)."""
    from core.__main__ import main

    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["users", "--db", db_url, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_the_command_line_sets_up_the_first_reviewer_and_invites_annotators(db_url, cli):
    code, _, err = cli("add", "Ada", "--role", "reviewer", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, err
    assert accounts.authenticate(db_url, "Ada", PASSWORD).is_reviewer
    code, out, err = cli("add", "Ben", "--role", "annotator", "--invite", "--url", "https://review.example.org/lab/")
    assert code == 0, err
    link = urlsplit(out.strip())
    assert (link.scheme, link.netloc, link.path) == ("https", "review.example.org", "/lab/")
    token = parse_qs(link.query)["invite"][0]
    assert accounts.redeem(db_url, token).name == "Ben"
    listed = cli("list")[1].splitlines()
    assert listed[0].startswith("Ben\tannotator\tactive\tno password\tinvite valid until")
    assert listed[1].startswith("Ada\treviewer\tactive\tpassword\tno invite")
    assert cli("revoke", "Ben")[0] == 0
    with pytest.raises(UserError):
        accounts.redeem(db_url, token)
    code, _, err = cli("add", "Ada", "--role", "reviewer", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and err.strip() == "error: There is already an account named 'Ada'"
    code, _, err = cli("password", "Ada", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 10 characters" in err
    assert cli("disable", "Ada")[0] == 0 and not accounts.has_reviewer(db_url)
    code, _, err = cli("invite", "Zoe")
    assert code == 2 and "No account named 'Zoe'" in err
