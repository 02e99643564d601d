"""redact(): passwords in URLs, conninfo strings and registered secrets never survive."""

from __future__ import annotations

import pytest

import exporter.redact
from exporter.redact import MASK, describe_error, redact, register_secret


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty secret registry and leaves no secrets behind."""
    monkeypatch.setattr(exporter.redact, "_secrets", set())


def test_mask_is_three_stars() -> None:
    """Masked values read as ***."""
    assert MASK == "***"


def test_url_password_is_masked() -> None:
    """The password of a postgresql:// URL is replaced; user, host, port and database stay."""
    url = "postgresql://claude:development_password@localhost:5432/claude_studio"
    assert redact(url) == "postgresql://claude:***@localhost:5432/claude_studio"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://u:pw1234@h/db", "postgres://u:***@h/db"),
        ("postgresql+psycopg://u:pw1234@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://:pw1234@h/db", "postgresql://:***@h/db"),
        ("failed: 'postgresql://u:pw1234@h/db'", "failed: 'postgresql://u:***@h/db'"),
        ('dsn="postgresql://u:pw1234@h/db"', 'dsn="postgresql://u:***@h/db"'),
        ("(postgresql://u:pw1234@h/db)", "(postgresql://u:***@h/db)"),
        (
            "a postgresql://u:one1@h1/d1 and postgresql://v:two2@h2/d2 end",
            "a postgresql://u:***@h1/d1 and postgresql://v:***@h2/d2 end",
        ),
        ("postgresql://u:pa:ss/wd@h/db", "postgresql://u:***@h/db"),
        (
            "line one\npostgresql://u:pw1234@h/db\nline three",
            "line one\npostgresql://u:***@h/db\nline three",
        ),
    ],
    ids=[
        "postgres-scheme",
        "driver-scheme",
        "no-user",
        "single-quoted",
        "double-quoted",
        "parenthesised",
        "two-urls",
        "colon-and-slash-in-password",
        "multi-line",
    ],
)
def test_url_forms(text: str, expected: str) -> None:
    """URL passwords are masked whatever the scheme, quoting or surrounding text."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://claude@localhost:5432/claude_studio",
        "postgresql://localhost/claude_studio",
        "postgresql:///claude_studio?host=/var/run/postgresql",
        "postgresql://u:@h/db",
        "see https://example.com/docs for details",
        "a plain sentence with no secrets: user@example.com",
        "",
    ],
)
def test_text_without_password_is_unchanged(text: str) -> None:
    """Text holding no password comes back exactly as it was."""
    assert redact(text) == text


def test_password_containing_at_sign() -> None:
    """An unencoded @ in the password does not leave the password's tail visible."""
    assert redact("postgresql://u:p@ss@word@db.example/app") == "postgresql://u:***@db.example/app"


def test_percent_encoded_password() -> None:
    """A percent-encoded password is masked as a whole."""
    url = "postgresql://u:p%40ss%3Aw%2Frd@db.example:5432/app"
    assert redact(url) == "postgresql://u:***@db.example:5432/app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db password=s3cr3t user=u", "host=db password=*** user=u"),
        ("host=db password='s3 cr3t' user=u", "host=db password=*** user=u"),
        ("host=db password='it\\'s s3cr3t' user=u", "host=db password=*** user=u"),
        ("host=db password = s3cr3t user=u", "host=db password = *** user=u"),
        ("host=db PASSWORD=s3cr3t", "host=db PASSWORD=***"),
        ("password=s3cr3t", "password=***"),
        ("'host=db password=s3cr3t'", "'host=db password=***'"),
    ],
    ids=["unquoted", "quoted", "escaped-quote", "spaces", "uppercase", "alone", "in-repr"],
)
def test_conninfo_password(text: str, expected: str) -> None:
    """password=... in a libpq conninfo string is masked, quoted or not; other keys stay."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "postgresql://db/app?user=u&password=s3cr3t&sslmode=require",
            "postgresql://db/app?user=u&password=***&sslmode=require",
        ),
        ("postgresql://db/app?password=p%40ss", "postgresql://db/app?password=***"),
        (
            "postgresql://u:one1@db/app?password=two2",
            "postgresql://u:***@db/app?password=***",
        ),
    ],
    ids=["middle-of-query", "percent-encoded", "both-places"],
)
def test_password_in_url_query(text: str, expected: str) -> None:
    """password= in a URL's query string is masked up to the next parameter."""
    assert redact(text) == expected


def test_registered_secret_in_free_text() -> None:
    """A registered secret is masked wherever it appears, even outside any URL."""
    register_secret("hunter2-pw")
    assert redact("auth failed for hunter2-pw (hunter2-pw)") == "auth failed for *** (***)"


def test_registered_secret_is_masked_decoded_too() -> None:
    """Registering a percent-encoded secret also masks its decoded form."""
    register_secret("p%40ssword")
    assert redact("raw p%40ssword, decoded p@ssword") == "raw ***, decoded ***"


def test_longer_secret_is_masked_before_its_prefix() -> None:
    """When one secret contains another, the longer one is masked whole."""
    register_secret("s3cr3t")
    register_secret("s3cr3t-longer")
    assert redact("x s3cr3t-longer y s3cr3t z") == "x *** y *** z"


@pytest.mark.parametrize("secret", ["a", "ab", "abc"])
def test_short_secrets_are_not_registered(secret: str) -> None:
    """Secrets under 4 characters are ignored, so ordinary words are not masked."""
    register_secret(secret)
    text = f"a label {secret} and more abc text"
    assert redact(text) == text


@pytest.mark.parametrize("secret", ["", None])
def test_empty_secret_is_ignored(secret: str | None) -> None:
    """Registering nothing masks nothing."""
    register_secret(secret)
    assert redact("nothing to hide") == "nothing to hide"


def test_four_character_secret_is_registered() -> None:
    """A secret of exactly 4 characters is masked."""
    register_secret("abcd")
    assert redact("x abcd y") == "x *** y"


def test_redact_is_idempotent() -> None:
    """Redacting twice gives the same text as redacting once."""
    register_secret("hunter2-pw")
    text = "postgresql://u:pw1234@h/db password=x hunter2-pw"
    once = redact(text)
    assert redact(once) == once
    assert "pw1234" not in once
    assert "hunter2-pw" not in once


def test_describe_error_is_one_masked_line() -> None:
    """describe_error names the class, keeps only the first line, and masks passwords."""
    error = ConnectionError("failed at postgresql://u:s3cr3t-pw@h/db\nDETAIL: more\nHINT: x")
    assert describe_error(error) == "ConnectionError: failed at postgresql://u:***@h/db"
