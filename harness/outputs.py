"""Output folders the tool writes whole (reports, engine comparisons): never over a file it did not write.

An output goes to a new or empty folder, or replaces an earlier output of this
tool, known by the manifest of its files it holds. A folder holding anything
else is refused before any work is done, and nothing in it is touched.
"""

import shutil
import tempfile
from pathlib import Path

MANIFEST = ".harness-report"  # the files an output holds, one name a line, so a later one replaces only those


def check_output_folder(out, flag="--out"):
    """Raise ValueError, naming `flag`, if `out` exists and holds anything an earlier output did not write."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{flag} {out}: a file of that name exists; choose a folder")
    present = {p.name for p in out.iterdir()}
    manifest = out / MANIFEST
    ours = set(manifest.read_text().splitlines()) | {MANIFEST} if manifest.is_file() else set()
    foreign = sorted(present - ours)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(
            f"{flag} {out}: the folder holds files this tool did not write ({shown}); "
            "choose a new or empty folder, or an earlier output's"
        )


def write_output_folder(out, fill, flag="--out"):
    """Write an output to `out`: `fill(folder)` writes its files into a staging folder beside `out`, which then
    takes the place of any earlier output, so a failure half-way leaves the old one whole. Returns `out`."""
    out = Path(out)
    check_output_folder(out, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as scratch:
        staging = Path(scratch) / "output"
        staging.mkdir()
        fill(staging)
        written = sorted(p.name for p in staging.iterdir())
        (staging / MANIFEST).write_text("".join(f"{name}\n" for name in written))
        check_output_folder(out, flag)  # nothing foreign arrived while it was being written
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out
