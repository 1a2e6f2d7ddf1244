"""FF_POSTGRES_* settings: what is required, what is validated, what is logged."""

import pytest
from pg_support import asyncio_loop, env, make_backend

from appliance.core.errors import StartupError


def test_postgres_without_a_url_is_refused_with_an_example():
    with pytest.raises(StartupError, match=r"requires FF_POSTGRES_URL, e\.g\. postgresql://"):
        make_backend({})


@pytest.mark.parametrize("size", ["0", "1001", "ten", "-3"])
def test_pool_size_out_of_range_is_refused_naming_the_variable(size):
    with pytest.raises(StartupError, match="FF_POSTGRES_POOL_SIZE"):
        make_backend({"FF_POSTGRES_URL": "postgresql://u@h/db", "FF_POSTGRES_POOL_SIZE": size})


def test_pool_size_defaults_to_ten_and_accepts_its_bounds():
    assert make_backend({"FF_POSTGRES_URL": "postgresql://u@h/db"}).pool_size == 10
    for size in (1, 1000):
        options = {"FF_POSTGRES_URL": "postgresql://u@h/db", "FF_POSTGRES_POOL_SIZE": str(size)}
        assert make_backend(options).pool_size == size


def test_malformed_url_is_refused_naming_the_variable():
    with pytest.raises(StartupError, match="FF_POSTGRES_URL"):
        make_backend({"FF_POSTGRES_URL": "postgresql://u@h:notaport/db?bogus_option=1"})


def test_describe_names_host_port_and_database_but_never_the_password():
    backend = make_backend({"FF_POSTGRES_URL": "postgresql://ff:s3cret@db.internal:6543/prod"})
    assert backend.describe() == "postgres db.internal:6543/prod"


async def test_unreachable_server_refuses_to_start_naming_where():
    backend = make_backend({"FF_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    async with asyncio_loop():
        with pytest.raises(StartupError, match=r"cannot use PostgreSQL at 127\.0\.0\.1:1/nowhere"):
            await backend.prepare(env())


async def test_missing_database_is_refused_saying_to_create_it(postgres_backend_options):
    url = postgres_backend_options["FF_POSTGRES_URL"].rsplit("/", 1)[0] + "/ff_no_such_db"
    backend = make_backend({"FF_POSTGRES_URL": url})
    async with asyncio_loop():
        with pytest.raises(StartupError) as refused:
            await backend.prepare(env())
    message = str(refused.value)
    assert "createdb ff_no_such_db" in message and "CREATE DATABASE" in message, message
    assert "FF_POSTGRES_URL" in message and "\n" not in message
    assert "start it" not in message
