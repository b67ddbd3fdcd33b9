"""How a Spark worker finds the warehouse password the driver's conninfo leaves out."""

from __future__ import annotations

import pytest

from filedrop.spark.tasks import worker_conninfo
from filedrop.warehouse.client import conninfo


def test_the_password_of_the_same_server_database_and_user_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://loader:s%40cret@db.example:5433/wh?sslmode=require")
    got = conninfo(worker_conninfo("host=db.example port=5433 dbname=wh user=loader sslmode=require"))
    assert got["password"] == "s@cret" and got["sslmode"] == "require"


@pytest.mark.parametrize("driver", [
    "host=other.example port=5433 dbname=wh user=loader",  # another server: never send it the password
    "host=db.example port=5432 dbname=wh user=loader",
    "host=db.example port=5433 dbname=other user=loader",
    "host=db.example port=5433 dbname=wh user=someone",
])
def test_no_password_goes_to_another_server_database_or_user(driver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://loader:secret@db.example:5433/wh")
    assert "password" not in conninfo(worker_conninfo(driver))


def test_libpq_own_sources_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://loader:secret@db.example:5433/wh")
    assert worker_conninfo("host=db.example port=5433 dbname=wh user=loader") == \
        "host=db.example port=5433 dbname=wh user=loader"
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.delenv("FILEDROP_WAREHOUSE_URL")
    assert "password" not in conninfo(worker_conninfo("host=db.example dbname=wh user=loader"))


@pytest.mark.parametrize("url", ["postgresql://loader:pa%zzss@db.example/wh", "host=db.example password='s3 cr3t"])
def test_an_unreadable_url_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ValueError) as err:
        conninfo(url)
    assert "zz" not in str(err.value) and "cr3t" not in str(err.value), str(err.value)


def test_the_default_port_and_database_count_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg's dsn leaves out what equals libpq's defaults (port 5432, dbname = user); the install
    guide's URL writes them."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://loader:secret@db.example:5432/loader?sslmode=require")
    got = conninfo(worker_conninfo("user=loader host=db.example hostaddr=10.0.0.5 sslmode=require"))
    assert got["password"] == "secret"


def test_a_password_file_is_libpqs_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/secrets/pgpass")
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://loader:secret@db.example:5433/wh")
    assert "password" not in conninfo(worker_conninfo("host=db.example port=5433 dbname=wh user=loader"))


def test_client_keepalives_unless_the_url_sets_them() -> None:
    from filedrop.warehouse.client import _with_keepalives

    got = conninfo(_with_keepalives("postgresql://loader:pw@db.example:5432/wh"))
    assert (got["keepalives"], got["keepalives_idle"], got["keepalives_count"]) == ("1", "30", "3")
    assert got["password"] == "pw" and got["port"] == "5432"
    own = conninfo(_with_keepalives("postgresql://db.example/wh?keepalives_idle=5"))
    assert own["keepalives_idle"] == "5" and own["keepalives_interval"] == "10"
