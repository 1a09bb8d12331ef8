"""The README's first promises: the tool starts, lists its catalog and checks it."""


def test_version(run):
    r = run.ok("--version")
    assert r.stdout.strip().startswith("bonuscli ")


def test_catalog_bryansk_moscow_default(run):
    bry = {d["code"]: d for d in run.j("catalog", "--region", "RU-BRY")}
    mow = {d["code"]: d for d in run.j("catalog", "--region", "ru-mow")}
    other = {d["code"]: d for d in run.j("catalog", "--region", "RU-SPE")}
    assert bry["minutes_30"]["price"] == 85
    assert mow["minutes_30"]["price"] == 210
    assert other["minutes_30"]["price"] == 100


def test_subprocess_no_traceback(sub):
    r = sub(["earn", "12345", "10", "--category", "mobile"])
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
