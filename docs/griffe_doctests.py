"""A griffe extension for the API pages: the docstrings' doctest examples (`>>>` lines and the output below them)
shown as Python console code, not read as Markdown (where `[0.693, 1.318]` would be a broken link)."""

import griffe


def fence_doctests(text):
    """`text` with each run of doctest lines, up to the next blank line, inside a ```pycon fence."""
    out, inside = [], False
    for line in text.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not inside:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not line.strip():
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
