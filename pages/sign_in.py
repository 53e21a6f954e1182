"""Sign in, when authentication is on: reviewers with their name and password; annotators by the personal
invite link a reviewer made for them."""

from __future__ import annotations

import streamlit as st

from core import accounts
from core.errors import UserError
from core.render import md_escape
from pages.shared import SIGNED_IN, db_url

st.title("Sign in")
if not accounts.has_reviewer(db_url()):
    st.warning("This server has no reviewer yet. Whoever runs it creates the first one on its command line: "
               "`python -m core users add NAME --role reviewer`.")
with st.form("sign-in"):
    name = st.text_input("Name", max_chars=accounts.NAME_MAX_CHARS, autocomplete="username")
    password = st.text_input("Password", type="password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    try:
        st.session_state[SIGNED_IN] = accounts.authenticate(db_url(), name, password)
    except UserError as error:
        st.error(md_escape(error))
    else:
        st.rerun()
st.caption("Annotators: open the personal link your reviewer sent you; it signs you in. Reloading the page "
           "signs you out; the link works again until it expires.")
