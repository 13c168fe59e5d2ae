import csv
import json

from conftest import w2s

KEYS = {"weak", "w2s", "strong_sft", "ceiling", "pgr", "opr"}


def test_synth_json_contract():
    r = w2s(*["synth", "--trials", "500", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert set(s) >= {"d_sw", "measured", "stderr", "predicted"}
    for part in ("measured", "stderr", "predicted"):
        assert set(s[part]) == KEYS
    assert 3 <= s["d_sw"] <= 8
    assert s["config"]["trials"] == 500 and s["config"]["seed"] == 0
    table = w2s(*["synth", "--trials", "200"])
    assert "ER w2s" in table.stdout and "PGR" in table.stdout


def test_sweep_writes_png_and_csv(tmp_path):
    png, table = tmp_path / "s.png", tmp_path / "s.csv"
    r = w2s(
        *[
            "synth",
            "--sweep",
            "sigma",
            "--values",
            "0.5,1,2",
            "--trials",
            "300",
            "--plot",
            str(png),
            "--csv",
            str(table),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(table.open()))
    assert [float(row["sigma"]) for row in rows] == [0.5, 1.0, 2.0]
    out = json.loads(r.stdout)
    assert len(out["points"]) == 3
    # the variance-only theory: PGR does not depend on sigma, ER scales with sigma^2
    p = [pt["predicted"] for pt in out["points"]]
    assert p[0]["pgr"] == p[2]["pgr"] and abs(p[2]["w2s"] / p[0]["w2s"] - 16) < 1e-9


def test_synth_errors_are_one_line():
    for args, pattern in (
        (["--n-labeled", "20"], "n > d_w + 1"),
        (["--shared", "9"], "--shared"),
        (["--sweep", "width"], "--sweep"),
        (["--sweep", "sigma", "--values", "a,b"], "--values"),
        (["--ambient", "10"], "--ambient 10"),
    ):
        r = w2s("synth", "--trials", "10", *args)
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith("w2s: error:") and pattern in r.stderr and r.stderr.count("\n") == 1
