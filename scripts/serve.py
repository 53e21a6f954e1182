"""Start the dashboard: `streamlit run` with app.py's navigation in charge from the first visit.

Streamlit treats a main script with a `pages/` folder beside it as an old-style multipage app
until `st.navigation` first runs, so on a fresh server a first visit straight to a page URL
(a bookmark to /results) would skip app.py and list every file in pages/. Settling that flag
before the server starts keeps every visit on app.py's navigation.
"""

import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

PagesManager.uses_pages_directory = False

if __name__ == "__main__":
    sys.exit(cli.main())
