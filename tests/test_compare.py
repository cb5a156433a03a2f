import pandas as pd
from PIL import Image

from harness.cli import main
from tests.test_search import TINY, stores, write_space


def test_compare_engines_writes_anytime_curves_within_the_budget(tmp_path):
    space = {**TINY, "training": {"epochs": 2, "seed": 0}}
    storage, tracking = stores(tmp_path)
    out = tmp_path / "compare"
    code = main(
        [
            "compare-engines",
            "--space",
            str(write_space(tmp_path, space)),
            "--budget",
            "4",
            "--repeats",
            "2",
            "--strategy",
            "optuna-random",
            "--strategy",
            "keras-tuner-hyperband",
            "--study",
            "cmp",
            "--storage",
            storage,
            "--tracking-uri",
            tracking,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = pd.read_csv(out / "anytime.csv")
    assert set(table["strategy"]) == {"optuna-random", "keras-tuner-hyperband"} and set(table["repeat"]) == {0, 1}
    assert table["epochs"].max() == 4
    for _, run in table.groupby(["strategy", "repeat"]):
        best = run.sort_values("epochs")["best_val_accuracy"].dropna()
        assert best.is_monotonic_increasing and not best.empty
    with Image.open(out / "anytime.png") as image:
        image.verify()
    summary = (out / "summary.md").read_text()
    assert "epochs to target" in summary and "optuna-random" in summary


def test_a_budget_below_one_trial_is_refused(tmp_path, capsys):
    storage, tracking = stores(tmp_path)
    code = main(
        [
            "compare-engines",
            "--space",
            str(write_space(tmp_path, TINY)),
            "--budget",
            "1",
            "--storage",
            storage,
            "--tracking-uri",
            tracking,
        ]
    )
    assert code == 2 and "smaller than one trial" in capsys.readouterr().err
