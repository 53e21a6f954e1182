"""Who may do what when several people share one server: reviewers and annotators.

Authentication is off for a server bound to localhost (one researcher on their own machine: every page,
as before) and on when ``COMPRESSLENS_AUTH=on`` or the server listens beyond localhost. With it on,
reviewers sign in with a password (the first one is made with ``python -m core users add``) and annotators
with a personal invite link a reviewer makes. Passwords are kept as Argon2id hashes; an invite keeps only
the SHA-256 of its random token (a 256-bit token needs no slow hash, and the database alone cannot sign
anyone in). Invite links are
made against COMPRESSLENS_PUBLIC_URL when set (a server behind a proxy), else the address the reviewer's
browser used. A signed-in session holds a credential that is checked against the database on every rerun,
so disabling an account or revoking its invite ends its sessions at their next click.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from core.errors import UserError
from db.models import Account, Invite, utcnow
from db.session import session_scope

ROLES = ("reviewer", "annotator")
NAME_MAX_CHARS = 80
MIN_PASSWORD_CHARS = 10
INVITE_DAYS = 7
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106's low-memory profile
_UNKNOWN_NAME_HASH = _hasher.hash(secrets.token_hex(16))  # verified against for unknown names, to take as long


@dataclass(frozen=True)
class SignedIn:
    """A session's identity: the account, and how it signed in (an invite id, or None for a password)."""

    account_id: int
    name: str
    role: str
    invite_id: int | None = None

    @property
    def is_reviewer(self) -> bool:
        return self.role == "reviewer"


def auth_enabled(server_address: str | None) -> bool:
    """COMPRESSLENS_AUTH on/off decides; unset or auto, authentication is on unless the server listens only on
    localhost (Streamlit with no address listens on every interface)."""
    setting = os.environ.get("COMPRESSLENS_AUTH", "auto").strip().lower()
    if setting not in ("on", "off", "auto"):
        raise UserError(f"COMPRESSLENS_AUTH must be on, off or auto; got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return (server_address or "").strip("[]") not in LOOPBACK


def _name(name) -> str:
    name = str(name or "").strip()
    if not name:
        raise UserError("Give a name")
    if len(name) > NAME_MAX_CHARS:
        raise UserError(f"A name has at most {NAME_MAX_CHARS} characters; this one has {len(name)}")
    return name


def _password_hash(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"A password has at least {MIN_PASSWORD_CHARS} characters")
    return _hasher.hash(password)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _signed_in(account: Account, invite_id: int | None = None) -> SignedIn:
    return SignedIn(account.id, account.name, account.role, invite_id)


def create_account(db_url: str, name: str, role: str, password: str | None = None) -> SignedIn:
    """A new account; a reviewer needs a password (they sign in with it), an annotator may have one."""
    name = _name(name)
    if role not in ROLES:
        raise UserError(f"A role is one of {', '.join(ROLES)}; got {role!r}")
    if role == "reviewer" and not password:
        raise UserError("A reviewer signs in with a password: give one")
    hashed = _password_hash(password) if password else None
    with session_scope(db_url) as session:
        if session.scalar(select(Account.id).where(Account.name == name)) is not None:
            raise UserError(f"There is already an account named {name!r}")
        account = Account(name=name, role=role, password_hash=hashed, active=True)
        session.add(account)
        session.flush()
        return _signed_in(account)


def set_password(db_url: str, name: str, password: str) -> None:
    hashed = _password_hash(password)
    with session_scope(db_url) as session:
        _account(session, name).password_hash = hashed


def set_active(db_url: str, name: str, active: bool) -> None:
    """Disable an account (its sessions end at their next click; its labels stay) or enable it again."""
    with session_scope(db_url) as session:
        _account(session, name).active = active


def _account(session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == _name(name)))
    if account is None:
        raise UserError(f"No account named {name!r}")
    return account


def list_accounts(db_url: str, role: str | None = None) -> list[dict]:
    """Every account, with its invites (newest first) and whether one of them can still sign it in."""
    now = utcnow()
    with session_scope(db_url) as session:
        query = select(Account).order_by(Account.role, Account.name)
        if role is not None:
            query = query.where(Account.role == role)
        invites: dict[int, list[Invite]] = {}
        for invite in session.scalars(select(Invite).order_by(Invite.id.desc())):
            invites.setdefault(invite.account_id, []).append(invite)
        rows = []
        for account in session.scalars(query):
            rows.append({"name": account.name, "role": account.role, "active": account.active,
                         "password": account.password_hash is not None,
                         "created_at": account.created_at.isoformat(sep=" ", timespec="seconds"),
                         "invites": [{"id": i.id, "status": _invite_status(i, now),
                                      "expires_at": i.expires_at.isoformat(sep=" ", timespec="minutes"),
                                      "last_used_at": i.last_used_at.isoformat(sep=" ", timespec="minutes")
                                      if i.last_used_at else None} for i in invites.get(account.id, [])]})
        return rows


def has_reviewer(db_url: str) -> bool:
    with session_scope(db_url) as session:
        return session.scalar(select(Account.id).where(Account.role == "reviewer", Account.active).limit(1)) is not None


def authenticate(db_url: str, name, password) -> SignedIn:
    """The account for this name and password; one message for any failure, so it tells nothing of which names
    exist, and an unknown name costs the same hash as a known one."""
    refused = UserError("Wrong name or password")
    name, password = str(name or "").strip(), str(password or "")
    with session_scope(db_url) as session:
        account = session.scalar(select(Account).where(Account.name == name)) if name else None
        try:
            _hasher.verify(account.password_hash if account and account.password_hash else _UNKNOWN_NAME_HASH,
                           password)
        except (VerificationError, InvalidHashError):
            raise refused from None
        if account is None or account.password_hash is None or not account.active:
            raise refused
        if _hasher.check_needs_rehash(account.password_hash):  # the library's parameters moved on
            account.password_hash = _hasher.hash(password)
        return _signed_in(account)


def _live(account_id: int, now) -> tuple:
    return Invite.account_id == account_id, Invite.revoked_at.is_(None), Invite.expires_at > now


def create_invite(db_url: str, name: str, days: float = INVITE_DAYS) -> str:
    """A new invite for the account, valid ``days``; its earlier invites are revoked, so each person has one
    live link. Returns the token, which exists nowhere else: it goes into the link and is not stored."""
    if not 0 < days <= 365:
        raise UserError(f"An invite is valid for more than 0 and at most 365 days; got {days!r}")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with session_scope(db_url) as session:
        account = _account(session, name)
        session.execute(update(Invite).where(*_live(account.id, now)).values(revoked_at=now))
        session.add(Invite(account_id=account.id, token_hash=_token_hash(token), created_at=now,
                           expires_at=now + timedelta(days=days)))
    return token


def revoke_invites(db_url: str, name: str) -> int:
    """Revoke every live invite of the account; the sessions they signed in end at their next click."""
    with session_scope(db_url) as session:
        account = _account(session, name)
        now = utcnow()
        return session.execute(update(Invite).where(*_live(account.id, now)).values(revoked_at=now)).rowcount


def app_url() -> str:
    """Where people reach this dashboard, for invite links made outside a browser (the CLI)."""
    return os.environ.get("COMPRESSLENS_PUBLIC_URL") or "http://localhost:8501"


def invite_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?invite={token}"


def _invite_status(invite: Invite, now) -> str:
    if invite.revoked_at is not None:
        return "revoked"
    return "expired" if invite.expires_at <= now else "valid"


def redeem(db_url: str, token) -> SignedIn:
    """Sign in with an invite link's token. The link stays valid until it expires or is revoked, so the
    annotator can open it again after closing the tab."""
    refused = UserError("This invite link is not valid: it may have expired or been revoked. "
                        "Ask your reviewer for a new one.")
    token = str(token or "")
    if not token or len(token) > 200:
        raise refused
    with session_scope(db_url) as session:
        invite = session.scalar(select(Invite).where(Invite.token_hash == _token_hash(token)))
        if invite is None or _invite_status(invite, utcnow()) != "valid":
            raise refused
        account = session.get(Account, invite.account_id)
        if not account.active:
            raise refused
        invite.last_used_at = utcnow()
        return _signed_in(account, invite.id)


def still_valid(db_url: str, signed_in: SignedIn) -> SignedIn | None:
    """The session's identity as the database has it now, or None when it no longer stands (the account was
    disabled or removed, its role changed, or the invite it came in by was revoked or ran out)."""
    with session_scope(db_url) as session:
        account = session.get(Account, signed_in.account_id)
        if account is None or not account.active or account.role != signed_in.role:
            return None
        if signed_in.invite_id is not None:
            invite = session.get(Invite, signed_in.invite_id)
            if invite is None or invite.account_id != account.id or _invite_status(invite, utcnow()) != "valid":
                return None
        return _signed_in(account, signed_in.invite_id)
