"""Modelfiles: Ollama's syntax parsed (every instruction, quoting, errors with line numbers),
written back so that it reads back exactly, and Go templates refused with the Jinja form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime.errors import LocalLLMError, ModelfileError, TemplateError
from local_llm_runtime.store.modelfile import (
    JINJA_CHATML_EXAMPLE,
    Modelfile,
    check_template,
    parse_modelfile,
    read_modelfile,
    render_modelfile,
)

CHATML = JINJA_CHATML_EXAMPLE

PARSED: dict[str, tuple[str, Modelfile]] = {
    "FROM only": ("FROM qwen2.5:7b", Modelfile(from_="qwen2.5:7b")),
    "FROM path and hf.co": (
        "FROM ./models/my model.gguf\n",
        Modelfile(from_="./models/my model.gguf"),
    ),
    "case-insensitive keywords": (
        "from x\nParameter temperature 0.5\nsYsTeM hi\nmessage USER q\nLicense MIT",
        Modelfile(
            from_="x",
            parameters={"temperature": 0.5},
            system="hi",
            messages=({"role": "user", "content": "q"},),
            license="MIT",
        ),
    ),
    "comments, blank lines, indentation": (
        "# a comment\n\n   FROM x\n\t# another one\n\n  SYSTEM use # freely\n# end",
        Modelfile(from_="x", system="use # freely"),
    ),
    "every instruction": (
        "FROM base:1\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER num_ctx 4096\n"
        'PARAMETER stop "<|im_end|>"\n'
        "PARAMETER stop User:\n"
        "PARAMETER keep_alive 5m\n"
        'SYSTEM """You are Mario.\nAnswer as Mario."""\n'
        f'TEMPLATE """{CHATML}"""\n'
        "MESSAGE user Is Toronto in Canada?\n"
        "MESSAGE assistant yes\n"
        "ADAPTER ./lora.gguf\n"
        "ADAPTER /abs/other.gguf\n"
        'LICENSE """MIT\nCopyright"""\n',
        Modelfile(
            from_="base:1",
            parameters={
                "temperature": 0.7,
                "num_ctx": 4096,
                "stop": ["<|im_end|>", "User:"],
                "keep_alive": 300.0,
            },
            system="You are Mario.\nAnswer as Mario.",
            template=CHATML,
            messages=(
                {"role": "user", "content": "Is Toronto in Canada?"},
                {"role": "assistant", "content": "yes"},
            ),
            adapters=("./lora.gguf", "/abs/other.gguf"),
            license="MIT\nCopyright",
        ),
    ),
    "double quotes keep padding, no escapes": (
        'FROM x\nSYSTEM "  padded \\n "',
        Modelfile(from_="x", system="  padded \\n "),
    ),
    "quotes inside a bare value": (
        'FROM x\nSYSTEM say "hi" now',
        Modelfile(from_="x", system='say "hi" now'),
    ),
    "a double-quoted value over lines": (
        'FROM x\nSYSTEM "one\ntwo"\nPARAMETER seed 1',
        Modelfile(from_="x", system="one\ntwo", parameters={"seed": 1}),
    ),
    "triple quotes holding quotes": (
        'FROM x\nSYSTEM """He said "hi"\n""\nthen left"""',
        Modelfile(from_="x", system='He said "hi"\n""\nthen left'),
    ),
    "triple quotes opening on their own line": (
        'FROM x\nSYSTEM """\nYou are terse.\n"""\n',
        Modelfile(from_="x", system="\nYou are terse.\n"),
    ),
    "single quotes (beyond Ollama)": (
        "FROM x\nSYSTEM 'quoted'\nLICENSE '''a\nb'''",
        Modelfile(from_="x", system="quoted", license="a\nb"),
    ),
    "a lone apostrophe stays literal": (
        "FROM x\nSYSTEM 'Tis a bot",
        Modelfile(from_="x", system="'Tis a bot"),
    ),
    "CRLF line ends (a Windows file: its line breaks read as \\n, as create -f read them)": (
        'FROM x\r\nSYSTEM """a\r\nb"""\r\nPARAMETER top_k 5\r\n',
        Modelfile(from_="x", system="a\nb", parameters={"top_k": 5}),
    ),
    "a CRLF inside a value of a \\n file is kept": (
        'FROM x\nSYSTEM """a\r\nb"""\nPARAMETER top_k 5\n',
        Modelfile(from_="x", system="a\r\nb", parameters={"top_k": 5}),
    ),
    "byte order mark": ("\ufeffFROM x", Modelfile(from_="x")),
    "the last SYSTEM and TEMPLATE win; LICENSEs add up": (
        "FROM x\nSYSTEM a\nSYSTEM b\nLICENSE one\nLICENSE two",
        Modelfile(from_="x", system="b", license="one\n\ntwo"),
    ),
    "empty values": (
        'FROM x\nSYSTEM ""\nMESSAGE user ""',
        Modelfile(from_="x", system="", messages=({"role": "user", "content": ""},)),
    ),
    "Ollama's deprecated parameters are ignored": (
        "FROM x\nPARAMETER num_keep 24\nPARAMETER mirostat 0\nPARAMETER top_p 0.9",
        Modelfile(from_="x", parameters={"top_p": 0.9}),
    ),
}


@pytest.mark.parametrize(("text", "expected"), PARSED.values(), ids=list(PARSED))
def test_parse(text: str, expected: Modelfile) -> None:
    assert parse_modelfile(text) == expected


ERRORS: dict[str, tuple[str, int | None, str]] = {
    "unknown instruction": ("FROM x\nFOO bar", 2, "unknown instruction 'FOO'"),
    "misspelt instruction": ("FROM x\n\nPARAMETERS top_k 1", 3, "'PARAMETERS'"),
    "Ollama-only instruction": ("FROM x\nDRAFT small", 2, "not supported by local-llm"),
    "no FROM": ("# nothing\nSYSTEM hi", None, "no FROM line"),
    "a second FROM": ("FROM x\nFROM y", 2, "a second FROM"),
    "keyword without value": ("FROM x\nSYSTEM\nLICENSE y", 2, "SYSTEM needs a value"),
    "FROM without value": ("FROM", 1, "FROM needs a value"),
    "PARAMETER without value": ("FROM x\nPARAMETER temperature", 2, "needs a name and a value"),
    "unknown PARAMETER": ("FROM x\nPARAMETER temprature 0.5", 2, "Did you mean 'temperature'"),
    "bad PARAMETER value": ("FROM x\nPARAMETER temperature hot", 2, "temperature"),
    "PARAMETER out of range": ("FROM x\nPARAMETER top_p 2", 2, "top_p"),
    "MESSAGE role": ("FROM x\nMESSAGE tool result", 2, "system, user, assistant"),
    "MESSAGE without text": ("FROM x\nMESSAGE user", 2, "MESSAGE needs a role"),
    "unclosed triple quotes": ('FROM x\nSYSTEM """never\nclosed\n', 2, 'end it with """'),
    "unclosed double quote": ('FROM x\n\nSYSTEM "never', 3, "never closed"),
    "CRLF counts one line": ("FROM x\r\n\r\nFOO y", 3, "unknown instruction"),
    "Go template": (
        'FROM x\nTEMPLATE """{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"""',
        2,
        "Go template syntax",
    ),
    "Go range template": (
        'FROM x\nTEMPLATE """{{- range .Messages }}{{ .Content }}{{ end }}"""',
        2,
        "{% for m in messages %}",
    ),
    "Jinja that does not compile": ('FROM x\nTEMPLATE "{% for %}"', 2, "does not compile"),
    "Jinja that ignores the messages": ('FROM x\nTEMPLATE "hello"', 2, "never writes"),
    "Jinja that fails on a conversation": (
        "FROM x\nTEMPLATE \"{{ raise_exception('no system role') }}\"",
        2,
        "no system role",
    ),
    "empty TEMPLATE": ('FROM x\nTEMPLATE ""', 2, "TEMPLATE is empty"),
}


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS.values(), ids=list(ERRORS))
def test_errors_name_the_line(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        parse_modelfile(text)
    error = caught.value
    assert isinstance(error, LocalLLMError) and isinstance(error, ValueError)
    assert error.line == line
    message = str(error)
    assert fragment in message
    assert "\n" not in message  # one line for the CLI
    if line is not None:
        assert message.startswith(f"Modelfile line {line}: ")


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Prompt }}",
        "{{- if .System }}x{{ end }}",
        "{{ range $i, $m := .Messages }}{{ $m.Content }}{{ end }}",
        "{% for m in messages %}{{ m.content }}{% endfor %}{{ else }}",
    ],
)
def test_go_templates_are_named_and_the_jinja_form_shown(template: str) -> None:
    with pytest.raises(TemplateError, match="Go template syntax") as caught:
        check_template(template)
    assert JINJA_CHATML_EXAMPLE in str(caught.value)


@pytest.mark.parametrize(
    "template",
    [
        CHATML,
        "{% for message in messages %}{{ message.content }}{% endfor %}{{ end_token | default('') }}",
        "{%- for m in messages -%}{{- m.content -}}{% endfor %}{% if true %}{% endif %}",
        # refuses a system message (as some models' templates do): still a valid template
        "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        + CHATML,
    ],
)
def test_jinja_templates_pass(template: str) -> None:
    check_template(template)  # no error


# ---- writing ---------------------------------------------------------------------------------

AWKWARD = [
    "plain",
    "",
    " leading",
    "trailing ",
    "   ",
    'say "hi"',
    '"quoted"',
    '"',
    '""',
    '"""',
    'a """ b',
    'ends with """',
    '"""starts',
    "line1\nline2",
    'a line ends with a quote"\nnext',
    'a line ends with triples"""\nnext',
    '"""\nsay\n"""',
    'both "\nand """\nend',
    "tab\there",
    "crlf\r\nline\rcr",
    "'single'",
    "'''",
    "'",
    "# not a comment",
    "\n",
    "x\n",
    "\nx",
    "unicode ü 中文 🎉",
    'back\\slash \\n \\"',
    "PARAMETER stop x\nFROM y",
]


def _modelfile_with(value: str) -> Modelfile:
    params: dict[str, Any] = {"temperature": 0.7, "num_ctx": 2048, "top_p": 1e-05}
    if value:
        params["stop"] = [value, "<|im_end|>"]
    stripped = value == value.strip() and value != ""
    return Modelfile(
        from_=value if stripped and "\n" not in value else "base:1",
        parameters=params,
        system=value,
        template="{# " + value + " #}" + CHATML,
        messages=(
            {"role": "system", "content": value},
            {"role": "user", "content": value},
            {"role": "assistant", "content": "ok"},
        ),
        adapters=(value,) if stripped and "\n" not in value and "\r" not in value else (),
        license=value,
    )


@pytest.mark.parametrize("value", AWKWARD, ids=[repr(v) for v in AWKWARD])
def test_render_reads_back_exactly(value: str) -> None:
    modelfile = _modelfile_with(value)
    text = render_modelfile(modelfile, name="my-model:latest")
    assert parse_modelfile(text) == modelfile
    assert parse_modelfile(render_modelfile(modelfile)) == modelfile


def test_render_looks_like_ollama_show() -> None:
    text = render_modelfile(
        Modelfile(
            from_="qwen2.5:7b",
            parameters={"temperature": 0.7, "stop": ["<|im_end|>"], "num_ctx": 4096},
            system="Be brief.",
            template=CHATML,
            messages=({"role": "user", "content": "Is Toronto in Canada?"},),
            license="MIT",
        ),
        name="qwen2.5:7b",
    )
    assert text.splitlines() == [
        '# Modelfile generated by "local-llm show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        "# FROM qwen2.5:7b",
        "",
        "FROM qwen2.5:7b",
        f'TEMPLATE """{CHATML}"""',
        'SYSTEM """Be brief."""',
        "PARAMETER temperature 0.7",
        'PARAMETER stop "<|im_end|>"',
        "PARAMETER num_ctx 4096",
        "MESSAGE user Is Toronto in Canada?",
        'LICENSE """MIT"""',
    ]


def test_a_value_no_quoting_can_hold_is_refused() -> None:
    value = "x\"\"\"\ny'''\nz"  # a line ends in " and """, another in '''
    with pytest.raises(ModelfileError, match="cannot be written in a Modelfile"):
        render_modelfile(Modelfile(from_="x", system=value))


def test_read_modelfile_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "Modelfile").write_text(
        "FROM ./weights/m.gguf\nADAPTER lora.gguf\nADAPTER /abs/l2.gguf\n", "utf-8"
    )
    parsed = read_modelfile(folder / "Modelfile")
    assert parsed.from_ == str(folder / "weights" / "m.gguf")
    assert parsed.adapters == (str(folder / "lora.gguf"), "/abs/l2.gguf")
    named = parse_modelfile("FROM qwen2.5:7b").resolved(folder)
    assert named.from_ == "qwen2.5:7b"  # a name is not a path


def test_read_modelfile_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ModelfileError, match="Cannot read the Modelfile"):
        read_modelfile(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfeF\x00")
    with pytest.raises(ModelfileError, match="not UTF-8"):
        read_modelfile(tmp_path / "bin")
