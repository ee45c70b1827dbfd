"""The config reference in docs/serving.md is generated from serve/config.py and kept in step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from recaccel.serve.config import SECTIONS, ExecutorSection
from recaccel.serve.config_reference import BEGIN, END, render, replace_reference, section_keys

PAGE = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
REGENERATE = "python -m recaccel.serve.config_reference --write docs/serving.md"


def test_the_page_holds_the_reference_the_dataclasses_give() -> None:
    page = PAGE.read_text()
    generated = page[page.index(BEGIN) : page.index(END) + len(END) + 1]
    assert generated == render(), f"docs/serving.md is stale: run `{REGENERATE}`"


@pytest.mark.parametrize("name", [*SECTIONS, "workers.executors"])
def test_every_key_is_in_the_reference_with_what_it_does(name: str) -> None:
    cls = ExecutorSection if name == "workers.executors" else SECTIONS[name]
    keys = section_keys(cls)
    assert [k.name for k in keys] == [f.name for f in dataclasses.fields(cls)]
    undocumented = [k.name for k in keys if not k.doc]
    assert not undocumented, f"[{name}] keys with no comment in serve/config.py: {undocumented}"


@dataclass(frozen=True)
class _Example:
    # Said above, over two
    # lines.
    first: int = 3  # and beside
    second: str = "x"
    third: tuple[int, ...] = (1,)  # only beside


def test_a_keys_text_is_the_comments_above_and_beside_it() -> None:
    keys = section_keys(_Example)
    assert [(k.name, k.type, k.default, k.doc) for k in keys] == [
        ("first", "int", "3", "Said above, over two lines. and beside"),
        ("second", "str", '"x"', ""),
        ("third", "tuple[int, ...]", "(1,)", "only beside"),
    ]


def test_writing_replaces_only_the_generated_part() -> None:
    page = f"# Title\n\nby hand\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert replace_reference(page, render()) == f"# Title\n\nby hand\n\n{render()}\nafter\n"
    with pytest.raises(ValueError, match="no generated section"):
        replace_reference("# no markers\n", render())
