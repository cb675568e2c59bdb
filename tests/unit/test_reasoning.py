"""ThinkSplitter: reasoning and answer apart, whatever the split points of the stream."""

from __future__ import annotations

import random

import pytest

from local_llm_runtime.prompt.reasoning import Piece, ThinkSplitter


def merged(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for kind, text in pieces:
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        elif text:
            out.append((kind, text))
    return out


def run(chunks: list[str], **kwargs: bool) -> list[Piece]:
    splitter = ThinkSplitter(**kwargs)  # type: ignore[arg-type]
    pieces: list[Piece] = []
    for chunk in chunks:
        pieces += splitter.feed(chunk)
    return merged(pieces + splitter.finish())


def chunkings(text: str) -> list[list[str]]:
    """Char by char, every split in two, and a few random chunkings."""
    out = [list(text), [text]]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 8))))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


CASES = [
    (
        "\n <think>\nI should add 2 and 2.\n</think>\n\nThe answer is 4.",
        {},
        [("reasoning", "I should add 2 and 2.\n"), ("text", "The answer is 4.")],
    ),
    (
        "The user wants a sum.\n</think>\n\n4 <think>x</think>",
        {"started_inside": True},
        [("reasoning", "The user wants a sum.\n"), ("text", "4 <think>x</think>")],
    ),
    (
        "No reasoning at all. <think>not a block</think>",
        {},
        [("text", "No reasoning at all. <think>not a block</think>")],
    ),
    ("<think>unfinished thoughts", {}, [("reasoning", "unfinished thoughts")]),
    ("<think></think>Just the answer", {}, [("text", "Just the answer")]),
    (
        "  Leading space kept when there is no block",
        {},
        [("text", "  Leading space kept when there is no block")],
    ),
    ("<thi", {}, [("text", "<thi")]),
    ("<think>a </thin", {}, [("reasoning", "a </thin")]),
]


@pytest.mark.parametrize(("text", "kwargs", "expected"), CASES)
def test_every_split_point_gives_the_same_result(
    text: str, kwargs: dict[str, bool], expected: list[Piece]
) -> None:
    for chunks in chunkings(text):
        assert run(chunks, **kwargs) == expected, chunks


def test_only_a_possible_partial_tag_is_held_back() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>Let") == [("reasoning", "Let")]
    assert splitter.in_reasoning
    assert splitter.feed(" me see </th") == [("reasoning", " me see ")]
    assert splitter.feed("e") == [("reasoning", "</the")]  # not a tag after all
    assert splitter.feed("</think>") == []
    assert not splitter.in_reasoning
    assert splitter.feed("\n\n") == []  # whitespace after </think> is dropped
    assert splitter.feed("4") == [("text", "4")]
    assert splitter.feed(" and more") == [("text", " and more")]
    assert splitter.finish() == []


def test_answer_text_streams_without_delay() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("Hello") == [("text", "Hello")]
    assert splitter.feed(" <think>") == [("text", " <think>")]


def test_whitespace_before_the_block_is_dropped() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("\n\n") == []
    assert splitter.feed("<think>x") == [("reasoning", "x")]


def test_started_inside_and_custom_tags() -> None:
    splitter = ThinkSplitter(open_tag="<reasoning>", close_tag="</reasoning>", started_inside=True)
    pieces = splitter.feed("\nhmm</reason") + splitter.feed("ing> ok") + splitter.finish()
    assert merged(pieces) == [("reasoning", "hmm"), ("text", "ok")]


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        ThinkSplitter(open_tag="")
