"""Errors whose message is meant for the user, shown as is in the UI and the CLI."""


class UserError(Exception):
    """Bad input or an unavailable resource; the message says what to do."""
