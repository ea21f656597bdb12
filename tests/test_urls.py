"""URL password redaction, written once in urls.py: masked for showing, left out for
connecting, and either way a URL that parses back to the same host, port and database."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from iddetective.urls import masked_url, without_password

IPV6 = "postgresql://u:p@[::1]:5432/db"


def test_an_ipv6_url_masks_and_parses_back() -> None:
    shown = masked_url(IPV6)
    assert shown == "postgresql://u:***@[::1]:5432/db"
    parts = urlsplit(shown)
    assert (parts.hostname, parts.port, parts.username, parts.path) == ("::1", 5432, "u", "/db")


def test_an_ipv6_url_without_its_password_parses_back() -> None:
    kept = without_password(IPV6)
    assert kept == "postgresql://u@[::1]:5432/db"
    parts = urlsplit(kept)
    assert (parts.hostname, parts.port, parts.username, parts.password) == ("::1", 5432, "u", None)
    assert without_password(kept) == kept and masked_url(kept) == kept


@pytest.mark.parametrize(
    ("url", "shown", "kept"),
    [
        (
            "postgresql://u:s3cret@db.example:5433/x",
            "postgresql://u:***@db.example:5433/x",
            "postgresql://u@db.example:5433/x",
        ),
        (
            "postgresql://u:p%40ss@h/x?sslmode=require",
            "postgresql://u:***@h/x?sslmode=require",
            "postgresql://u@h/x?sslmode=require",
        ),
        ("redis://:s3cret@broker:6379/0", "redis://:***@broker:6379/0", "redis://broker:6379/0"),
        ("postgresql://u@h/x", "postgresql://u@h/x", "postgresql://u@h/x"),
        (
            "postgresql:///x?host=/run/postgresql",
            "postgresql:///x?host=/run/postgresql",
            "postgresql:///x?host=/run/postgresql",
        ),
    ],
)
def test_passwords_masked_and_left_out(url: str, shown: str, kept: str) -> None:
    assert masked_url(url) == shown
    assert without_password(url) == kept


def test_a_photo_url_loses_its_user_name_too() -> None:
    assert masked_url("https://ann:pw@photos.example/a.jpg", user=True) == (
        "https://***@photos.example/a.jpg"
    )
    assert masked_url("https://ann@[2001:db8::1]/a.jpg", user=True) == (
        "https://***@[2001:db8::1]/a.jpg"
    )
    assert masked_url("https://photos.example/a.jpg", user=True) == "https://photos.example/a.jpg"


@pytest.mark.parametrize(
    "url", ["postgresql://u:s3cret@[::1/db", "postgresql://u:s3cret@h:99999/db"]
)
def test_a_url_that_does_not_parse_shows_no_password(url: str) -> None:
    for shown in (masked_url(url), without_password(url), masked_url(url, user=True)):
        assert "s3cret" not in shown and shown.startswith("postgresql://***@")
