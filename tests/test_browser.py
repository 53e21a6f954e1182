"""What only a browser shows: the dashboard served by `streamlit run`, driven in Debian's Chromium."""

import io

from PIL import Image

HOSTILE = ('<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script> '
           "Tom has $3 and Ann has $5. How many dollars do they have?")


def test_run_renders_escaped_text_and_a_drawn_chart(browser, dashboard):
    page = browser.new_page(viewport={"width": 1400, "height": 3000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(dashboard)
    page.get_by_label("Prompt", exact=True).fill(HOSTILE)
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("saved.").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)

    assert page.evaluate("window.__pwned") is None and dialogs == []
    # The shared-server settings: the header has no Deploy button or developer menu.
    assert page.get_by_role("button", name="Deploy").count() == 0
    assert page.get_by_test_id("stMainMenu").count() == 0
    # The markup is shown as the text it is, and "$3 ... $5" stays text instead of becoming LaTeX.
    prompt_box = page.locator(".cl-text").first
    assert "<script>window.__pwned=1</script>" in prompt_box.inner_text()
    assert "$3" in prompt_box.inner_text() and "$5" in prompt_box.inner_text()
    assert page.locator(".cl-text .katex").count() == 0
    assert page.locator(".cl-drop").count() > 0
    bars = page.locator(".js-plotly-plot .main-svg .bars path")
    assert bars.count() >= 7  # BLEU, ROUGE-1/2/L, BERTScore P/R/F1 of the compressed output

    # The trajectory strip is drawn: a screenshot of it holds the colour scale's many shades, not a blank frame.
    strip = page.locator(".js-plotly-plot").filter(has=page.locator(".heatmaplayer")).first
    strip.scroll_into_view_if_needed()
    shot = Image.open(io.BytesIO(strip.screenshot())).convert("RGB")
    assert len(set(shot.getdata())) > 30
    assert page.locator(".cl-tok").count() >= 2 * 128  # both canvases, token by token


def test_first_visit_to_a_page_url_keeps_the_app_navigation(browser, dashboard):
    page = browser.new_page()
    page.goto(dashboard + "/results")  # the server's very first visit, straight to a page
    page.get_by_role("heading", name="Results").wait_for(timeout=60_000)
    nav = page.get_by_test_id("stSidebarNav").inner_text()
    assert "Playground" in nav and "Experiments" in nav
    assert "shared" not in nav and "app" not in nav.split()  # no raw file names from pages/
    assert "Device:" in page.get_by_test_id("stSidebarUserContent").inner_text()  # app.py ran


def test_an_invite_link_signs_the_annotator_in_and_leaves_the_address_bar(browser, dashboards):
    from core import accounts

    server = dashboards(COMPRESSLENS_AUTH="on").start()
    accounts.create_account(server.db_url, "Ada", "reviewer", "correct horse battery")
    accounts.create_account(server.db_url, "Ben", "annotator")
    token = accounts.create_invite(server.db_url, "Ben")

    page = browser.new_page()
    page.goto(f"{server.url}/?invite={token}")
    sidebar = page.get_by_test_id("stSidebarUserContent")
    sidebar.get_by_text("Signed in as").wait_for(timeout=60_000)
    page.get_by_role("heading", name="Review").wait_for()
    assert "Ben" in sidebar.inner_text() and "annotator" in sidebar.inner_text()
    page.wait_for_function("!window.location.search.includes('invite')", timeout=10_000)
    assert token not in page.url and "invite" not in page.url
    assert page.get_by_test_id("stSidebarNav").count() == 0  # one page: no other to go to
    assert "Device:" not in sidebar.inner_text()

    page.goto(f"{server.url}/results")  # a new session, straight at a reviewer page: nobody is signed in
    page.get_by_role("heading", name="Sign in").wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Results").count() == 0

    page.get_by_role("textbox", name="Name").fill("Ada")
    page.get_by_role("textbox", name="Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Results").wait_for(timeout=60_000)  # the page asked for, once signed in
    assert "Review" in page.get_by_test_id("stSidebarNav").inner_text()

    accounts.revoke_invites(server.db_url, "Ben")
    page.goto(f"{server.url}/?invite={token}")
    page.get_by_text("This invite link is not valid").wait_for(timeout=60_000)
    page.get_by_role("heading", name="Sign in").wait_for()
