"""Output folders: written whole, replaced only when this tool wrote them, whatever their files are called."""

import pytest

from harness.outputs import MANIFEST, write_output_folder


def fill_with(names):
    def fill(folder):
        for name in names:
            (folder / name).write_text(name)

    return fill


def test_an_earlier_output_whose_files_have_spaces_is_replaced_whole(tmp_path):
    out = tmp_path / "report"
    write_output_folder(out, fill_with(["my study_answer.png", "index.md"]))
    assert (out / MANIFEST).read_text().splitlines() == ["index.md", "my study_answer.png"]
    write_output_folder(out, fill_with(["index.md"]))  # a study named with a space is ours too
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "index.md"]


def test_a_folder_with_a_foreign_file_is_refused_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("two years of work")
    with pytest.raises(
        ValueError, match=r"--out .*mine: the folder holds files this tool did not write \(thesis.txt\)"
    ):
        write_output_folder(out, fill_with(["index.md"]))
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]


def test_a_failure_half_way_leaves_the_earlier_output_whole(tmp_path):
    out = tmp_path / "report"
    write_output_folder(out, fill_with(["index.md"]))

    def broken(folder):
        (folder / "index.md").write_text("half")
        raise RuntimeError("a plot failed")

    with pytest.raises(RuntimeError):
        write_output_folder(out, broken)
    assert (out / "index.md").read_text() == "index.md" and [p.name for p in tmp_path.iterdir()] == ["report"]
