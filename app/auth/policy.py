"""What a password and an e-mail address must be, checked before anything is stored.

Passwords: at least 10 characters, not all one character, not one of the 30,000 most common passwords (the
list zxcvbn ships, compared case-insensitively), and not containing the account's e-mail address or its
local part. E-mail addresses: the syntax checks of `email-validator` (no DNS lookup: nothing is fetched at
run time), then lower-cased, as accounts are looked up. Messages name the field and say what to do.
Imports no web framework.
"""

from __future__ import annotations

from functools import cache

from email_validator import EmailNotValidError, validate_email

from app.errors import InvalidInput

MIN_PASSWORD_LENGTH = 10


@cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.casefold() for word in FREQUENCY_LISTS["passwords"])


def normalise_email(raw: str, *, field: str = "email") -> str:
    """The address as stored (lower case); InvalidInput saying what is wrong with it."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"{field}: not a valid e-mail address ({exc})") from None
    return str(checked.normalized).lower()


def check_password(password: str, *, email: str, field: str = "password") -> None:
    """InvalidInput naming the first rule the password breaks."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"{field}: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) == 1:
        raise InvalidInput(f"{field}: a single repeated character is too easy to guess")
    folded = password.casefold()
    if folded in _common_passwords() or folded.strip() in _common_passwords():
        raise InvalidInput(f"{field}: this is one of the most common passwords; choose another")
    local = email.split("@", 1)[0].casefold()
    if email.casefold() in folded or (len(local) >= 4 and local in folded):
        raise InvalidInput(f"{field}: must not contain your e-mail address")
