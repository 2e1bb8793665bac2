"""Bad arguments to the benchmark scripts end in one line, before anything is created, and a
database that cannot be used is said in one line."""

import os

import psycopg
import pytest

from pbx_control.bench import bindbench, callbench, seed

PG_ADMIN_URL = os.environ.get("PBX_CONTROL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def needs_pg():
    if os.environ.get("PBX_CONTROL_TEST_SKIP_PG") == "1":
        pytest.skip("PBX_CONTROL_TEST_SKIP_PG=1")


def bench_databases() -> set[str]:
    with psycopg.connect(seed.libpq_url(PG_ADMIN_URL)) as conn:
        return {name for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pbx_%'")}


@pytest.mark.parametrize("main", [callbench.main, bindbench.main, seed.main])
@pytest.mark.parametrize("argv, said", [
    (["--bindings", "-5"], "at least 1"),
    (["--numbers", "0"], "at least 1"),
    (["--bindings", "two"], "a whole number"),
    (["--bindings", "2000", "--numbers", "5"], "more than 200 bindings on a number"),
])
def test_a_bad_workload_is_refused_in_one_line_by_every_script(main, argv, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--admin-url", "postgresql://nobody@127.0.0.1:1/none"])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


@pytest.mark.parametrize("argv, said", [
    (["--rate", "0"], "more than 0"),
    (["--duration", "-1"], "more than 0"),
    (["--stage-seconds", "0"], "more than 0"),
    (["--hold", "-1"], "0 or more"),
    (["--warmup", "nan"], "a finite number"),
    (["--bound-share", "1.5"], "a share from 0 to 1"),
    (["--switch-interval", "-1"], "more than 0"),
    (["--trials", "0"], "at least 1"),
    (["--freshness", "--json", "x.json"], "for a load run, not --freshness"),
    (["--json", "/no/such/folder/x.json"], "no such folder"),
])
def test_nonsense_load_arguments_are_refused(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        callbench.main(argv)

    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_profile_without_py_spy_is_refused_before_anything_starts(monkeypatch, capsys):
    monkeypatch.setattr(callbench.profile, "available", lambda: False)

    with pytest.raises(SystemExit):
        callbench.main(["--profile", "/tmp/p.raw"])

    assert "needs py-spy" in capsys.readouterr().err


@pytest.mark.parametrize("main, prog", [(callbench.main, "bench_calls"),
                                        (bindbench.main, "bench_bindings")])
def test_a_database_that_does_not_exist_is_said_in_one_line(main, prog):
    needs_pg()
    url = PG_ADMIN_URL.rpartition("/")[0] + "/pbx_no_such_database"

    with pytest.raises(SystemExit) as exit_:
        main(["--database-url", url, "--bindings", "10", "--numbers", "2"])

    assert str(exit_.value.code).startswith(f"{prog}: database: ")
    assert "pbx_no_such_database" in str(exit_.value.code)


def test_a_database_not_holding_the_workload_is_refused_by_both_benchmarks():
    needs_pg()
    url, _ = seed.create_and_seed(PG_ADMIN_URL, seed.Workload(bindings=10, numbers=2))
    try:
        for main in (callbench.main, bindbench.main):
            with pytest.raises(SystemExit) as exit_:
                main(["--database-url", url, "--bindings", "8", "--numbers", "2"])

            assert "2 numbers and 10 active bindings, not --numbers 2 --bindings 8" in str(
                exit_.value.code)
    finally:
        seed.drop_database(PG_ADMIN_URL, url)


def test_a_seed_that_fails_leaves_no_database(monkeypatch):
    needs_pg()
    before = bench_databases()

    def broken(url, workload):
        raise RuntimeError("disk full")

    monkeypatch.setattr(seed, "seed", broken)
    with pytest.raises(RuntimeError):
        seed.create_and_seed(PG_ADMIN_URL, seed.Workload(bindings=10, numbers=2))

    assert bench_databases() == before


@pytest.mark.parametrize("argv, said", [
    (["--freshness", "--ramp"], "for a load run, not --freshness"),
    (["--json", "/tmp"], "a folder, not a file"),
    (["--profile", "/no/such/folder/p.raw"], "no such folder"),
])
def test_options_that_would_fail_after_the_run_are_refused_before_it(argv, said, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(callbench.profile, "available", lambda: True)

    with pytest.raises(SystemExit):
        callbench.main(argv)

    assert said in capsys.readouterr().err


def test_more_clients_than_the_server_has_connections_for_are_refused(capsys):
    with pytest.raises(SystemExit):
        bindbench.main(["--clients", "100000"])

    assert "from 1 to 64" in capsys.readouterr().err


def test_the_seeder_says_a_bad_database_url_in_one_line():
    with pytest.raises(SystemExit) as exit_:
        seed.main(["--database-url", "nonsense", "--bindings", "10", "--numbers", "2"])

    assert str(exit_.value.code).startswith("seed_bindings: database: ")


def test_a_database_without_the_tables_is_said_to_need_seeding():
    needs_pg()
    url = PG_ADMIN_URL.rpartition("/")[0] + "/pbx_test_no_tables"
    with psycopg.connect(seed.libpq_url(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pbx_test_no_tables")
        conn.execute("CREATE DATABASE pbx_test_no_tables")
    try:
        with pytest.raises(SystemExit) as exit_:
            seed.check_seeded(url, seed.Workload(bindings=10, numbers=2))

        assert "no pbx-control tables" in str(exit_.value.code)
    finally:
        seed.drop_database(PG_ADMIN_URL, url)


def test_a_controller_that_exits_during_a_run_ends_it_with_an_error(monkeypatch):
    needs_pg()
    before = bench_databases()
    real_stage = callbench.run_stage

    async def stage_after_a_crash(label, calls, cases, config, rate, seconds, watched, **kw):
        controller = watched.rss_kb.__self__  # the Child whose memory the stage samples
        controller.process.kill()
        controller.process.wait()
        return await real_stage(label, calls, cases, config, rate, seconds, watched, **kw)

    monkeypatch.setattr(callbench, "run_stage", stage_after_a_crash)

    with pytest.raises(SystemExit) as exit_:
        callbench.main(["--bindings", "10", "--numbers", "2", "--rate", "2", "--duration", "1",
                        "--warmup", "0", "--no-baseline", "--hold", "0",
                        "--admin-url", PG_ADMIN_URL])

    assert "pbx-control exited during the run" in str(exit_.value.code)
    assert bench_databases() == before
