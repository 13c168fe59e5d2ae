"""`--config FILE.toml`: options by long name, the command line over the file, mistakes refused with their
line, the effective configuration recorded; the shipped study configs are valid for their commands."""

import json
import sys
from pathlib import Path

import pytest
import typer
from conftest import assert_user_error, seed_run_dir, w2s

from w2s_cli.cli.app import app
from w2s_cli.cli.config import dumps, load
from w2s_cli.store import artifact as store

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
STUDY = """\
vary = ["n-pseudo=300,600"]
weak = "test_efficientnet@32"
strong = "test_resnet@32"
pretrained = false
data = "digits"
n-labeled = 200
n-test = 300
subspace = "20"
num-workers = 0
quiet = true
trials = 2
"""


@pytest.mark.slow
def test_a_sweep_from_a_file_with_the_command_line_on_top(tiny_run, tmp_path):
    seed_run_dir(tiny_run, tmp_path / "out")  # STUDY's models on digits, already extracted: the sweep reuses them
    config = tmp_path / "study.toml"
    config.write_text(STUDY)
    r = w2s("sweep", "--config", config, "--trials", 1, "--out-dir", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [p["params"] for p in out["points"]] == [{"n-pseudo": "300"}, {"n-pseudo": "600"}]
    assert out["trials"] == 1 and out["points"][0]["summary"]["n_labeled"] == 200  # the command line wins
    effective = out["configuration"]
    assert effective["trials"] == 1 and effective["n-labeled"] == 200 and effective["pretrained"] is False
    assert effective["vary"] == ["n-pseudo=300,600"] and effective["out-dir"] == str(tmp_path / "out")
    # each point's combined result records it too, and it reads back as a config file that gives the same
    meta = store.read_meta(Path(out["points"][1]["result"]))
    assert meta["configuration"] == effective
    again = tmp_path / "again.toml"
    again.write_text(dumps({k: v for k, v in effective.items() if k not in ("json",)}))
    r2 = w2s("sweep", "--config", again, "--json")
    assert r2.exit_code == 0, r2.output
    assert [p["summary"]["error"] for p in json.loads(r2.stdout)["points"]] == [
        p["summary"]["error"] for p in out["points"]
    ]


@pytest.mark.slow
def test_run_records_its_configuration_and_a_repeated_option_replaces_the_files_list(tiny_run, tmp_path):
    seed_run_dir(tiny_run, tmp_path / "run")  # STUDY's models on digits, already extracted: the run reuses them
    config = tmp_path / "run.toml"
    config.write_text(STUDY.replace('vary = ["n-pseudo=300,600"]\n', "n-pseudo = 300\n").replace("trials = 2", ""))
    r = w2s("run", "--config", config, "--out-dir", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.output
    meta = store.read_meta(tmp_path / "run" / "result.safetensors")
    assert meta["configuration"]["n-pseudo"] == 300 and meta["configuration"]["weak"] == "test_efficientnet@32"
    assert json.loads(r.stdout)["n_pseudo"] == 300
    config.write_text(STUDY)
    r = w2s("sweep", "--config", config, "--vary", "n-pseudo=450", "--out-dir", tmp_path / "run", "--json")
    assert r.exit_code == 0 and [p["key"] for p in json.loads(r.stdout)["points"]] == ["n-pseudo=450"]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('data = "digits"\n\nwidth = 3\n', "line 3: 'width' is not an option of w2s sweep"),
        ('vary = ["n-pseudo=300"]\n[grid]\nn = 1\n', "line 2: 'grid' is a table"),
        ('n-labeled = [1, 2]\nvary = "n-pseudo=300"\n', "line 1: --n-labeled takes one value, not a list"),
        ('config = "other.toml"\n', "line 1: 'config' is not an option"),
        ("n-labeled = \n", "not valid TOML"),
        ('no-pretrained = "yes"\n', "--no-pretrained is a flag: true or false"),
    ],
)
def test_config_mistakes_are_refused_with_their_line(tmp_path, text, pattern):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert_user_error(w2s("sweep", "--config", config, "--out-dir", tmp_path / "out"), pattern)
    assert not (tmp_path / "out").exists()


def test_unreadable_configs_and_wrong_values(tmp_path):
    assert_user_error(w2s("run", "--config", tmp_path / "missing.toml"), "missing.toml: cannot read it")
    config = tmp_path / "c.toml"
    config.write_text('n-labeled = "many"\n')
    assert_user_error(w2s("run", "--config", config, "--out-dir", tmp_path / "o"), "Invalid value for '--n-labeled'")
    assert_user_error(w2s("extract", "--config", config, "--data", "digits", "--model", "m"), "No such option")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_the_shipped_study_configs_are_valid_for_their_commands(path):
    command = "rank-teachers" if path.stem == "rank-teachers" else "sweep"
    click_command = typer.main.get_command(app).commands[command]
    values = load(path, click_command, command)
    assert values and ("flags__trials" in values) and values["flags__trials"] == 5


def test_a_written_configuration_reads_back_the_same():
    configuration = {"vary": ["weak=a@32,b@64", "subspace=200,auto"], "energy": 0.9, "reuse": True, "limit": None}
    configuration["note"] = 'quote " and backslash \\ and tab \t'
    assert tomllib.loads(dumps(configuration)) == {k: v for k, v in configuration.items() if v is not None}
