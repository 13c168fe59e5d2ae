"""Every recipe, executor and config value checked in one place before any work, each mistake said in one line
that names the option as the user typed it (finetune, run, sweep, rank-teachers, --config)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import (
    assert_user_error,
    copy_finetune_inputs,
    embeddings_artifact,
    latent_embeddings,
    seed_run_dir,
    w2s,
)

from w2s_cli import W2SError
from w2s_cli.cli.app import app
from w2s_cli.cli.config import load, option_names
from w2s_cli.options import ExecutorOptions, RunOptions, SplitOptions, StudentKind, SubspaceOptions
from w2s_cli.options.recipe import FLAGS, FinetuneRecipe
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store

MODELS = ("--weak", "test_efficientnet@32", "--strong", "test_resnet@32", "--no-pretrained")
RUN = ("--data", "digits", *MODELS, "-q", "--num-workers", 0, "--n-test", 100)  # never gets to extract here
RANK = ("--data", "digits", "--no-pretrained", "-q", "--num-workers", 0, "--n-test", 100)
TEACHERS = ("--strong", "test_resnet@32", "--weak", "test_efficientnet@32", "--weak", "test_efficientnet@40")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """Instant inputs for `w2s finetune`: synthetic embeddings (no network behind them, so that a finetune that
    got past its checks would stop at rebuilding it) and pseudo-labels of n = 4 and n = 100 labels."""
    d = tmp_path_factory.mktemp("validation")
    S, W, z = latent_embeddings(600, 6, 10, 3, 48, 64, seed=3)
    labels = np.argmax(z @ np.random.default_rng(4).normal(size=(3, 10)), axis=1)
    weak = embeddings_artifact(d / "weak.safetensors", W, labels, "weak-net")
    paths = {"strong": embeddings_artifact(d / "strong.safetensors", S, labels, "strong-net"), "dir": d}
    for n in (4, 100):
        split = SplitOptions(n_labeled=n, n_pseudo=300, n_test=100)
        teacher = train_weak(weak, d / f"t{n}.safetensors", split=split, subspace=SubspaceOptions("2"))
        paths[n] = pseudolabel(teacher, d / f"p{n}.safetensors")
    return paths


def finetune(chain: dict[str, Path], n: int, out: Path, *args) -> list:
    return ["finetune", chain[n], "--strong", chain["strong"], "--subspace", 2, "-q", "-o", out, *args]


def nothing_written(folder: Path) -> None:
    assert not any(p.name.startswith("out") for p in folder.iterdir()), sorted(folder.iterdir())


# 1. a fit whose validation share rounds to no row ---------------------------------------------------------
def test_finetune_refuses_a_fit_without_validation_rows_before_any_work(chain, tmp_path):
    r = w2s(*finetune(chain, 4, tmp_path / "out.safetensors"))
    assert_user_error(r, "strong SFT trains on 4 rows: --val-fraction 0.1 holds out round(0.4) = 0 of them")
    assert "give --val-fraction 0.126 or more (one row), or --select last" in r.stderr
    r = w2s(*finetune(chain, 4, tmp_path / "out.safetensors", "--val-fraction", "0.02", "--select", "best"))
    assert_user_error(r, "--val-fraction 0.02 holds out round(0.08) = 0")
    nothing_written(tmp_path)


@pytest.mark.slow
def test_a_finetune_on_few_labels_is_refused_or_runs_as_told(finetune_inputs, weak_emb, tmp_path):
    """The real network: n = 4 labels with the default recipe is refused before the prefix cache or any fit
    (no weights, no checkpoint); --select last, or the --val-fraction the message gives, runs."""
    d, _, strong = copy_finetune_inputs(finetune_inputs, tmp_path)
    split = SplitOptions(n_labeled=4, n_pseudo=300, n_test=200)
    pseudo = pseudolabel(train_weak(weak_emb, d / "t4.safetensors", split=split, subspace=SubspaceOptions("2")),
                         d / "p4.safetensors")  # fmt: skip
    base = ["finetune", pseudo, "--strong", strong, "--subspace", 2, "--epochs", 1, "--num-workers", 0, "-q"]
    r = w2s(*base, "-o", d / "r.safetensors")
    assert_user_error(r, "strong SFT trains on 4 rows")
    assert not (d / "r.safetensors").exists() and not (d / "r.safetensors.fits").exists()
    assert not (d / "activations").exists()  # the frozen prefix's cache was not made either
    share = re.search(r"give --val-fraction ([0-9.]+) or more", r.stderr).group(1)
    r = w2s(*base, "--val-fraction", share, "-o", d / "best.safetensors")
    assert r.exit_code == 0, r.output
    assert store.read_meta(d / "best.safetensors")["fits"]["strong_sft"]["val_rows"] == 1
    r = w2s(*base, "--select", "last", "--train", "head", "-o", d / "last.safetensors")
    assert r.exit_code == 0, r.output
    fits = store.read_meta(d / "last.safetensors")["fits"]
    assert fits["strong_sft"]["val_rows"] == 0 and fits["strong_sft"]["chosen_epoch"] == 1


def test_run_sweep_and_rank_teachers_refuse_it_from_the_split_before_extracting(tmp_path):
    out = tmp_path / "out"
    r = w2s("run", *RUN, "--student", "finetune", "--n-labeled", 4, "--out-dir", out)
    assert_user_error(r, "strong SFT trains on 4 rows")
    r = w2s("sweep", *RUN, "--student", "finetune", "--vary", "n-labeled=100,4", "--out-dir", out)
    assert_user_error(r, "strong SFT trains on 4 rows")
    r = w2s("sweep", *RUN, "--n-labeled", 4, "--vary", "student=probe,finetune", "--out-dir", out)
    assert_user_error(r, "strong SFT trains on 4 rows")
    r = w2s("rank-teachers", *RANK, *TEACHERS, "--student", "finetune", "--measure", "--n-labeled", 4, "--out-dir", out)
    assert_user_error(r, "strong SFT trains on 4 rows")
    r = w2s("run", *RUN, "--student", "finetune", "--n-pseudo", 4, "--val-fraction", 0.1, "--out-dir", out)
    assert_user_error(r, "the W2S student trains on 4 rows")
    config = tmp_path / "few.toml"
    config.write_text('student = "finetune"\nn-labeled = 5\n')
    assert_user_error(w2s("run", "--config", config, *RUN, "--out-dir", out), "strong SFT trains on 5 rows")
    assert not out.exists()


def test_the_row_check_is_the_recipe_s_own():
    FinetuneRecipe().check_rows({"w2s": 300, "strong_sft": 6, "ceiling": 306})  # round(0.6) = 1 row: fine
    FinetuneRecipe(select="last").check_rows({"strong_sft": 1})
    with pytest.raises(W2SError, match="no --val-fraction below 0.5 holds out one of 1 row: give --select last"):
        FinetuneRecipe(val_fraction=0.4).check_rows({"strong_sft": 1})
    with pytest.raises(W2SError, match="give --val-fraction 0.251 or more"):
        FinetuneRecipe(val_fraction=0.2).check_rows({"ceiling": 2})
    RunOptions(split=SplitOptions(n_labeled=4), student=StudentKind.probe)  # a linear student needs no validation
    with pytest.raises(W2SError, match="strong SFT trains on 4 rows"):
        RunOptions(split=SplitOptions(n_labeled=4), student=StudentKind.finetune)


# 2. recipe names checked against timm when the recipe is built --------------------------------------------
def test_unknown_optimisers_and_schedules_are_refused_when_the_recipe_is_built(chain, tmp_path):
    out = tmp_path / "out.safetensors"
    r = w2s(*finetune(chain, 100, out, "--opt", "adamx"))
    assert_user_error(r, "--opt 'adamx' is not an optimiser of timm's (did you mean adamax")
    assert "e.g. adamw, adam, sgd" in r.stderr
    assert_user_error(w2s(*finetune(chain, 100, out, "--sched", "cosin")), "not 'cosin' (did you mean cosine?)")
    assert_user_error(w2s(*finetune(chain, 100, out, "--sched", "plateau")), "--sched must be one of timm's")
    assert_user_error(w2s(*finetune(chain, 100, out, "--opt", "adahessian")), "needs second-order gradients")
    run_out = tmp_path / "run"
    assert_user_error(w2s("run", *RUN, "--student", "finetune", "--opt", "adamx", "--out-dir", run_out), "--opt")
    r = w2s("sweep", *RUN, "--vary", "student=probe,finetune", "--sched", "linear", "--out-dir", run_out)
    assert_user_error(r, "--sched must be one of timm's schedules cosine")
    nothing_written(tmp_path)
    for opt, sched in (("sgd", "step"), ("lookahead_adamw", "constant"), ("AdamW", "wsd"), ("lamb", "poly")):
        assert FinetuneRecipe(opt=opt, sched=sched).opt == opt


def test_a_schedule_timm_cannot_lay_over_a_fit_is_refused_with_its_numbers(tmp_path):
    recipe = FinetuneRecipe(sched="wsd", epochs=1, warmup_epochs=1)  # no updates left for wsd's decay
    with pytest.raises(W2SError, match="--sched wsd: timm cannot lay this schedule over the W2S student's 300 rows"):
        recipe.check_rows({"w2s": 300})
    FinetuneRecipe(sched="wsd", epochs=3, warmup_epochs=0.5).check_rows({"w2s": 300, "strong_sft": 100})
    r = w2s("run", *RUN, "--student", "finetune", "--sched", "wsd", "--epochs", 1, "--warmup-epochs", 1,
            "--out-dir", tmp_path / "o")  # fmt: skip
    assert_user_error(r, "--sched wsd: timm cannot lay this schedule")


# 3. messages name the option of the command the user ran --------------------------------------------------
@pytest.mark.parametrize(
    "args, toml, pattern",
    [
        (("--ft-batch-size", 0), "ft-batch-size = 0", "--ft-batch-size must be a whole number of at least 1, got 0"),
        (("--ft-precision", "fp8"), 'ft-precision = "fp8"', "--ft-precision must be fp32, bf16 or fp16, got fp8"),
        (("--weight-decay", "nan"), "weight-decay = nan", "--weight-decay must be 0 or more, got nan"),
        (("--warmup-epochs", 6), "warmup-epochs = 6", "--warmup-epochs must be between 0 and --epochs (5)"),
        (("--aux-weight", 2), "aux-weight = 2", "--aux-weight must be in [0, 1]"),
    ],
)
def test_recipe_messages_name_the_finetuning_flags_in_every_command(chain, tmp_path, args, toml, pattern):
    out = tmp_path / "out"
    assert_user_error(w2s(*finetune(chain, 100, out, *args)), pattern)
    assert_user_error(w2s("run", *RUN, "--student", "finetune", *args, "--out-dir", out), pattern)
    assert_user_error(w2s("sweep", *RUN, "--vary", "epochs=5,6", *args, "--out-dir", out), pattern)
    config = tmp_path / "c.toml"
    config.write_text(toml + "\n")
    assert_user_error(w2s("run", "--config", config, *RUN, "--student", "finetune", "--out-dir", out), pattern)
    assert not out.exists()


def test_every_recipe_flag_is_an_option_of_the_commands_that_take_the_recipe():
    for command in ("finetune", "run", "sweep"):
        names = option_names(typer.main.get_command(app).commands[command])
        for field, flag in FLAGS.items():
            param, negative = names[flag[2:]]
            assert param.name == f"recipe__{field}" and not negative, (command, flag)


# 4. config values go through the command line's types ------------------------------------------------------
@pytest.mark.parametrize(
    "command, text, pattern",
    [
        (
            "finetune",
            "lr = 0.01\nepochs = true\n",
            "line 2: Invalid value for '--epochs': true (a boolean) is not a whole",
        ),
        (
            "finetune",
            "val-fraction = true\n",
            "line 1: Invalid value for '--val-fraction': true (a boolean) is not a number",
        ),
        ("run", 'epochs = "5"\n', "line 1: Invalid value for '--epochs': \"5\" (a string) is not a whole number"),
        (
            "run",
            "n-labeled = 100.0\n",
            "line 1: Invalid value for '--n-labeled': 100.0 (a float) is not a whole number",
        ),
        ("sweep", "lr = [0.1]\n", "line 1: --lr takes one value, not a list"),
        (
            "sweep",
            'loss = "magic"\n',
            "line 1: Invalid value for '--loss': \"magic\" (a string) is not one of mse, xent",
        ),
        ("sweep", "vary = [1, 2]\n", "line 1: Invalid value for '--vary': 1 (an integer) is not a string"),
        (
            "sweep",
            "slurm-gpus = true\n",
            "line 1: Invalid value for '--slurm-gpus': true (a boolean) is not a whole number",
        ),
        (
            "rank-teachers",
            "trials = 2.0\n",
            "line 1: Invalid value for '--trials': 2.0 (a float) is not a whole number",
        ),
        (
            "rank-teachers",
            "measure = 1\n",
            "line 1: Invalid value for '--measure': 1 (an integer) is not true or false",
        ),
        (
            "run",
            "subspace = 300\n",
            "line 1: Invalid value for '--subspace': 300 (an integer) is not a string (in quotes)",
        ),
    ],
)
def test_config_values_of_another_type_are_refused_with_file_key_and_line(tmp_path, command, text, pattern):
    config = tmp_path / "study.toml"
    config.write_text(text)
    # what follows the file would stop the command at once, were the file let through (no inputs, no trials)
    out = tmp_path / "out"
    stop = {
        "finetune": ("x.safetensors", "--strong", "y.safetensors", "-o", out),
        "rank-teachers": (*TEACHERS, "--trials", 0, "--out-dir", out),
        "sweep": ("--vary", "n-pseudo=100", "--trials", 0, "--out-dir", out),
    }
    r = w2s(command, "--config", config, *stop.get(command, ("--trials", 0, "--out-dir", out)))
    assert_user_error(r, f"--config {config} {pattern}")
    assert not (tmp_path / "out").exists()


def test_config_values_of_the_option_s_type_are_taken_as_given(tmp_path):
    config = tmp_path / "ok.toml"
    config.write_text('label-noise = 0\nlr = 1\nepochs = 2\nloss = "xent"\nsubspace = "20"\nvary = ["lr=0.1,1"]\n')
    values = load(config, typer.main.get_command(app).commands["sweep"], "sweep")
    assert values["split__label_noise"] == 0 and values["recipe__lr"] == 1 and values["recipe__loss"] == "xent"


# 5. executors: refused before any work, failures to start in one line, recorded -------------------------------
def test_slurm_without_slurm_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    out = tmp_path / "out"
    r = w2s("sweep", *RUN, "--vary", "n-pseudo=100,200", "--executor", "slurm", "--out-dir", out)
    assert_user_error(r, "--executor slurm: this machine has no SLURM (no sbatch or srun on the PATH)")
    r = w2s("rank-teachers", *RANK, *TEACHERS, "--measure", "--executor", "slurm", "--out-dir", out)
    assert_user_error(r, "--executor slurm: this machine has no SLURM")
    assert not out.exists()
    assert ExecutorOptions("slurm", dry_run=True).kind == "slurm"  # an estimate needs no SLURM


def test_an_sbatch_that_refuses_the_jobs_is_one_line(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nowhere' >&2\nexit 1\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "srun").symlink_to(sbatch)  # submitit looks for srun too (the jobs would run it, on the cluster)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = w2s("sweep", *RUN, "--vary", "n-pseudo=100", "--executor", "slurm", "--slurm-partition", "nowhere",
            "--out-dir", tmp_path / "out")  # fmt: skip
    # the count of jobs to run, said before submitting, then the one error line (no traceback, no sbatch output)
    assert r.exit_code == 2 and r.stdout == "", r.output
    note, error = r.stderr.strip().splitlines()
    assert note == "0 of 1 jobs already finished; 1 to run (slurm)", r.stderr
    assert error == (
        "w2s: error: --executor slurm: the jobs could not be submitted "
        "(sbatch: error: invalid partition specified: nowhere)"
    )


@pytest.mark.parametrize(
    "args, pattern",
    [
        (("--slurm-mem-gb", "inf"), "--slurm-mem-gb must be positive (and finite), got inf"),
        (("--slurm-gpus", -1), "--slurm-gpus must be 0 or more (a whole number), got -1"),
        (("--slurm-cpus", 0), "--slurm-cpus must be positive (a whole number), got 0"),
        (("--slurm-option", "time=10"), "w2s sets this sbatch option itself (use --slurm-time)"),
        (("--slurm-option", "--mem=4G"), "(use --slurm-mem-gb)"),
        (("--slurm-option", "array=0-9"), "w2s sets this sbatch option itself"),
        (("--slurm-option", "two words=1"), "expected KEY=VALUE"),
        (("--slurm-option", "qos="), "expected KEY=VALUE"),
        (("--slurm-option", "comment=a\nb"), "a line break"),
    ],
)
def test_executor_values_are_checked_before_any_work(tmp_path, args, pattern):
    sweep = ("sweep", *RUN, "--vary", "n-pseudo=100", "--trials", 0, "--out-dir", tmp_path / "o")  # --trials 0: a
    r = w2s(*sweep, "--executor", "submitit-local", *args)  # stop at once, should the executor's values get through
    assert_user_error(r, pattern)
    assert not (tmp_path / "o").exists()


def test_sbatch_options_reach_submitit_in_its_own_form():
    options = ExecutorOptions("submitit-local", sbatch=["qos=high", "--exclusive", "mail-type=END"])
    assert options.sbatch_parameters() == {"qos": "high", "exclusive": True, "mail_type": "END"}


@pytest.mark.slow
def test_the_sweep_record_says_which_executor_ran(tiny_run, tmp_path):
    out = seed_run_dir(tiny_run, tmp_path / "out")
    r = w2s("sweep", *MODELS, "--data", "digits", "--n-labeled", 200, "--n-test", 300, "--subspace", 20,
            "--num-workers", 0, "-q", "--vary", "n-pseudo=300", "--out-dir", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["configuration"]["executor"] == "inprocess"


# 6. --epochs has its own rule ---------------------------------------------------------------------------------
def test_epochs_zero_is_refused_by_its_own_rule_first(chain, tmp_path):
    said = "--epochs must be a whole number of at least 1, got 0 (epoch 0 is the LP-FT start"
    r = w2s(*finetune(chain, 100, tmp_path / "out", "--epochs", 0))
    assert_user_error(r, said)
    assert "use --student probe" in r.stderr and "--warmup-epochs" not in r.stderr
    assert_user_error(w2s("run", *RUN, "--student", "finetune", "--epochs", 0, "--out-dir", tmp_path / "o"), said)
    assert_user_error(w2s("sweep", *RUN, "--vary", "epochs=0,1", "--out-dir", tmp_path / "o"), said)
    nothing_written(tmp_path)


# 7. the rest of the recipe, before any work ---------------------------------------------------------------------
def test_augment_without_images_is_refused_before_extracting(tmp_path):
    r = w2s("run", *RUN, "--student", "finetune", "--augment", "--out-dir", tmp_path / "o")
    assert_user_error(r, "--augment needs images: --train lora:R or all (--train last:2 trains on cached inputs)")
    assert not (tmp_path / "o").exists()
    assert FinetuneRecipe(train="lora:4", augment=True).augment


@pytest.mark.parametrize(
    "fields, pattern",
    [
        ({"epochs": 2.5}, "--epochs must be a whole number of at least 1, got 2.5"),
        ({"epochs": True}, "--epochs must be a whole number"),
        ({"batch_size": 0}, "--ft-batch-size must be a whole number of at least 1"),
        ({"lr": float("inf")}, "--lr must be positive, got inf"),
        ({"val_fraction": float("nan")}, r"--val-fraction must be in \[0, 0.5\)"),
        ({"aux_warmup": -0.1}, r"--aux-warmup must be in \[0, 1\]"),
        ({"loss": "hinge"}, "--loss must be one of mse, xent, logconf, not 'hinge'"),
        ({"select": "first"}, "--select must be one of best, last, not 'first'"),
        ({"augment": "yes"}, "--augment must be true or false"),
        ({"train": "lora:x"}, "--train lora:x: lora:N needs a LoRA rank R of at least 1"),
    ],
)
def test_every_recipe_field_is_checked_when_built(fields, pattern):
    with pytest.raises(W2SError, match=pattern):
        FinetuneRecipe(**fields)
