"""The saved database setting: a shared server chosen once is used without STELLA_DATABASE_URL,
its password sealed (never in the file in clear), and a connection test that says what is wrong
without repeating the password."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import make_url

from stella_core.bootstrap import Stella, probe_database
from stella_core.errors import DefinitionError, StellaError
from stella_core.profiles import DATABASE_URL_ENV, DatabaseSetting, configured_database_url


def test_a_saved_server_is_used_without_the_environment_variable(world, monkeypatch) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    world.open().close()  # the first admin's profile for this server, on this machine
    setting = DatabaseSetting(world.home)
    assert configured_database_url(world.home) is None  # nothing saved: the embedded default

    password = make_url(world.admin_url).password
    assert password
    setting.save(world.admin_url)
    text = setting.path.read_text()
    assert password not in text
    assert setting.path.stat().st_mode & 0o777 == 0o600
    assert setting.shown() == json.loads(text)["url"]
    assert setting.has_password()
    assert configured_database_url(world.home) == world.admin_url

    stella = Stella.open(home=world.home)
    try:
        assert stella.backend.target.endswith(f"/{world.dbname}")
        assert stella.tenancy.whoami().role.value == "admin"
    finally:
        stella.close()

    setting.save(None)
    assert configured_database_url(world.home) is None


def test_the_connection_test_names_the_server_or_the_problem(world) -> None:
    assert probe_database(world.admin_url).startswith("PostgreSQL 1")
    wrong = make_url(world.admin_url).set(password="not-the-password-x1")
    with pytest.raises(StellaError) as refused:
        probe_database(wrong.render_as_string(hide_password=False))
    assert "not-the-password-x1" not in refused.value.message
    with pytest.raises(DefinitionError):
        probe_database("mysql://someone:secret-y2@localhost/db")
