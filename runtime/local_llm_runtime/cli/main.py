"""``local-llm``: an Ollama-shaped command line for the model store.

User errors (bad names, missing models, offline, bad options) print one line to
stderr and exit with status 1; usage errors exit with 2 (argparse); Ctrl-C
exits with 130. No traceback reaches the user for any of these.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from local_llm_runtime import __version__
from local_llm_runtime.cli import server_commands
from local_llm_runtime.cli._format import human_age, human_size
from local_llm_runtime.errors import LocalLLMError, ModelfileError
from local_llm_runtime.options import parse_params
from local_llm_runtime.store.library import ModelLibrary

if TYPE_CHECKING:
    from local_llm_runtime.interface import EngineProtocol
    from local_llm_runtime.types import FinalChunk

__all__ = ["main", "make_engine"]


def make_engine(lib: ModelLibrary) -> EngineProtocol:
    """The engine the CLI's generation commands talk to (``run``).

    The one place the CLI picks a backend, through
    :func:`local_llm_runtime.backends.create_engine` with ``lib``'s settings (the
    backend is imported then, so store-only commands never load llama.cpp). The
    rest of the CLI uses only :class:`~local_llm_runtime.interface.EngineProtocol`.
    """
    # Here, not at module level: list/show/pull/rm never import the engine's modules.
    from local_llm_runtime.backends import create_engine

    return create_engine(settings=lib.settings)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("    ".join(cells).rstrip() + "\n")


def _cmd_list(lib: ModelLibrary, _args: argparse.Namespace, out: TextIO) -> None:
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for record in lib.list():
        rows.append(
            [
                record.name,
                record.digest[:12],
                human_size(record.size),
                human_age(record.modified_at),
            ]
        )
    _table(rows, out)


def _section(out: TextIO, title: str, items: list[tuple[str, Any]]) -> None:
    items = [(k, v) for k, v in items if v is not None and v != ""]
    if not items:
        return
    out.write(f"  {title}\n")
    width = max(len(k) for k, _ in items)
    for key, value in items:
        shown = "" if value is True else value
        out.write(f"    {key.ljust(width)}    {shown}".rstrip() + "\n")
    out.write("\n")


_UNVERIFIED = "NO - the source sent no hash; the digest is of the bytes received"


def _repository(source: dict[str, Any]) -> str | None:
    repo = source.get("repo_id")
    return f"modelscope.cn/{repo}" if repo and source.get("kind") == "modelscope" else repo


def _cmd_show(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    if getattr(args, "modelfile", False):
        out.write(lib.modelfile(args.name))
        return
    info = lib.show(args.name)
    if args.json:
        json.dump(info, out, indent=2, default=str)
        out.write("\n")
        return
    d = info["details"]
    out.write("\n")
    _section(
        out,
        "Model",
        [
            ("architecture", d["architecture"]),
            ("parameters", d["parameters_human"]),
            ("context length", d["context_length"]),
            ("embedding length", d["embedding_length"]),
            ("quantization", d["quantization"]),
            (
                "chat template",
                "Modelfile" if info["template"] else "yes" if d["chat_template"] else "no",
            ),
        ],
    )
    _section(out, "Capabilities", [(c, True) for c in d["capabilities"]])
    source = info["source"]
    _section(
        out,
        "Source",
        [
            ("repository", _repository(source)),
            ("revision", source.get("revision")),
            ("digest", info["digest"]),
            ("verified", {True: "yes", False: _UNVERIFIED}.get(info["verified"], "-")),
            ("size", human_size(info["size"])),
        ]
        + [("file", f["path"]) for f in info["files"]],
    )
    _section(out, "Parameters", sorted(info["parameters"].items()))
    if info["system"]:
        _section(out, "System", [(info["system"], True)])
    if info["messages"]:
        _section(out, "Messages", [(m["role"], m["content"]) for m in info["messages"]])
    if info["adapters"]:
        _section(out, "Adapters", [(a["path"], True) for a in info["adapters"]])
    if info["license"] or d["license"]:
        text = str(info["license"] or d["license"]).strip() or "-"
        _section(out, "License", [(text.splitlines()[0], True)])


def _cmd_pull(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    out.write(f"pulling {args.name}\n")
    out.flush()
    record = lib.pull(args.name, update=args.update)
    if record.verified:
        out.write(f"verifying sha256 digest {record.digest[:12]}\nsuccess\n")
        return
    names = ", ".join(f.repo_path or "?" for f in record.files if not f.verified)
    out.write(
        f"WARNING: {'ModelScope' if record.source == 'modelscope' else 'the Hub'} sent no hash "
        f"for {names}; recorded UNVERIFIED "
        f"(sha256 {record.digest[:12]} is of the bytes received)\nsuccess (unverified)\n"
    )


def _cmd_rm(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    for name in args.names:
        record = lib.remove(name)
        out.write(f"deleted '{record.name}'\n")


def _cmd_cp(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    record = lib.copy(args.source, args.destination)
    out.write(f"copied '{record.origin}' to '{record.name}'\n")


def _cmd_create(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    params = parse_params(args.param or [])
    path = args.file
    if args.source is None and path is None:
        if not Path("Modelfile").is_file():
            raise ModelfileError(
                "Give a Modelfile with -f FILE (or put one named Modelfile here), "
                "or a model or .gguf file with --from."
            )
        path = "Modelfile"  # as ollama create
    if path is None:
        record = lib.create(args.name, args.source, system=args.system, parameters=params)
    else:
        from local_llm_runtime.store.modelfile import read_modelfile  # create -f only

        modelfile = read_modelfile(path)
        if args.system is not None or params:  # flags go over the Modelfile's values
            modelfile = dataclasses.replace(
                modelfile,
                system=args.system if args.system is not None else modelfile.system,
                parameters={**modelfile.parameters, **params},
            )
        record = lib.create(args.name, **modelfile.create_arguments())
    out.write(f"created '{record.name}'\n")


def _print_stats(final: FinalChunk, total_s: float, err: TextIO) -> None:
    t = final.timings
    rows = [
        ("total duration", f"{total_s:.3f}s"),
        ("load duration", f"{t.load_s:.3f}s"),
        ("prompt eval count", f"{final.usage.prompt_tokens} token(s)"),
        ("prompt eval duration", f"{t.prompt_s:.3f}s"),
        ("prompt eval rate", f"{t.prompt_tokens_per_s:.2f} tokens/s"),
        ("eval count", f"{final.usage.completion_tokens} token(s)"),
        ("eval duration", f"{t.generation_s:.3f}s"),
        ("eval rate", f"{t.generation_tokens_per_s:.2f} tokens/s"),
    ]
    for key, value in rows:
        err.write(f"{key + ':':<22}{value}\n")
    err.flush()


def _answer(
    engine: EngineProtocol,
    args: argparse.Namespace,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    out: TextIO,
) -> str:
    """Stream one answer to ``out``; Ctrl-C stops it (the chat goes on)."""
    from local_llm_runtime.types import ReasoningDelta, TextDelta, ToolCallDelta

    started = time.monotonic()
    text: list[str] = []
    thinking = False
    final: FinalChunk | None = None
    with engine.chat_stream(args.name, messages, options=options) as stream:
        try:
            for chunk in stream:
                if isinstance(chunk, ReasoningDelta):
                    if not thinking:
                        out.write("Thinking...\n")
                        thinking = True
                    out.write(chunk.text)
                elif isinstance(chunk, TextDelta):
                    if thinking:
                        out.write("\n...done thinking.\n\n")
                        thinking = False
                    text.append(chunk.text)
                    out.write(chunk.text)
                elif isinstance(chunk, ToolCallDelta):
                    out.write(f"[tool call] {chunk.name}({chunk.arguments_json})\n")
                else:
                    final = chunk
                out.flush()
        except KeyboardInterrupt:
            stream.close()
            out.write("\n")
            return "".join(text)
    out.write("\n")
    out.flush()
    if args.verbose and final is not None:
        _print_stats(final, time.monotonic() - started, sys.stderr)
    return "".join(text)


def _cmd_run(lib: ModelLibrary, args: argparse.Namespace, out: TextIO) -> None:
    options = parse_params(args.param or [])
    engine = make_engine(lib)
    prompt = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None:
        system = [{"role": "system", "content": args.system}] if args.system else []
        _answer(engine, args, [*system, {"role": "user", "content": prompt}], options, out)
        return
    lib.resolve(args.name)  # pull before the first prompt, like ollama run
    out.write("Send a message (/? for help, /bye to exit, Ctrl-C stops an answer)\n")
    _ChatSession(engine, lib, args, options, out).loop()


_CHAT_HELP = """Available commands:
  /set parameter KEY VALUE   set an option for this session (temperature, num_ctx, stop, ...)
  /set system TEXT           set the system message
  /show info                 model details (as `local-llm show`)
  /show parameters           the options this session sends
  /show system               the system message
  /clear                     forget the conversation so far
  /bye                       exit
  /?, /help                  this help
Use \"\"\" to begin and end a message of several lines.
"""


class _ChatSession:
    """The interactive loop of ``local-llm run``, with Ollama's slash commands."""

    def __init__(
        self,
        engine: EngineProtocol,
        lib: ModelLibrary,
        args: argparse.Namespace,
        options: dict[str, Any],
        out: TextIO,
    ) -> None:
        self.engine, self.lib, self.args, self.out = engine, lib, args, out
        self.options = dict(options)
        self.system: str | None = args.system
        self.history: list[dict[str, Any]] = []

    def loop(self) -> None:
        while True:
            try:
                line = self._read()
            except EOFError:
                self.out.write("\n")
                return
            except KeyboardInterrupt:
                self.out.write("\nUse Ctrl + d or /bye to exit.\n")
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                try:
                    if not self._command(text):
                        return
                except LocalLLMError as exc:
                    self.out.write(f"Error: {exc}\n")
                continue
            self._ask(line)

    def _ask(self, text: str) -> None:
        system = [{"role": "system", "content": self.system}] if self.system else []
        messages = [*system, *self.history, {"role": "user", "content": text}]
        try:
            reply = _answer(self.engine, self.args, messages, self.options, self.out)
        except LocalLLMError as exc:  # e.g. the context is full: say so, keep the session
            self.out.write(f"Error: {exc}\n")
            return
        self.history += [messages[-1], {"role": "assistant", "content": reply}]

    def _read(self) -> str:
        """One message: a line, or the lines between two triple quotes."""
        line = input(">>> ")
        stripped = line.strip()
        if not stripped.startswith('"""'):
            return line
        body = stripped[3:]
        if body.endswith('"""'):  # """on one line"""
            return body[:-3]
        lines = [body]
        while True:
            more = input("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    def _command(self, text: str) -> bool:
        """Run a slash command; ``False`` means exit."""
        words = text.split(maxsplit=2)
        name = words[0].lower()
        if name in ("/bye", "/exit"):
            return False
        if name in ("/?", "/help"):
            self.out.write(_CHAT_HELP)
        elif name == "/clear":
            self.history.clear()
            self.out.write("Cleared session context\n")
        elif name == "/set" and len(words) == 3 and words[1] == "system":
            self.system = words[2]
            self.out.write("Set system message.\n")
        elif name == "/set" and len(words) == 3 and words[1] == "parameter":
            key, _, value = words[2].partition(" ")
            parsed = parse_params([f"{key}={value.strip()}"])
            if key == "stop":  # repeated: each /set adds a stop sequence
                parsed["stop"] = [*self.options.get("stop", []), *parsed["stop"]]
            self.options.update(parsed)
            self.out.write(f"Set parameter '{key}' to '{value.strip()}'\n")
        elif name == "/show" and len(words) >= 2 and words[1] == "info":
            _cmd_show(self.lib, argparse.Namespace(name=self.args.name, json=False), self.out)
        elif name == "/show" and len(words) >= 2 and words[1] == "parameters":
            items = sorted(self.options.items())
            self.out.write("".join(f"{k:<16}{v}\n" for k, v in items) or "No parameters set.\n")
        elif name == "/show" and len(words) >= 2 and words[1] == "system":
            self.out.write(f"{self.system}\n" if self.system else "No system message set.\n")
        else:
            self.out.write(f"Unknown command '{text}'. Type /? for help.\n")
        return True


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``local-llm``."""
    parser = argparse.ArgumentParser(
        prog="local-llm",
        description="Local GGUF models, Ollama-style, in-process with llama.cpp.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("pull", help="download a model from the Hugging Face Hub or ModelScope")
    p.add_argument("name", help="e.g. qwen2.5:7b or hf.co/org/repo-GGUF:Q4_K_M")
    p.add_argument("--update", action="store_true", help="check the Hub for a newer commit")
    p.set_defaults(func=_cmd_pull)

    p = sub.add_parser("list", aliases=["ls"], help="list local models")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show", help="show a model's details (from its GGUF header)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--modelfile", action="store_true", help="print a Modelfile that 'create -f' takes"
    )
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("rm", help="remove models (files go when no other name uses them)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=_cmd_rm)

    p = sub.add_parser("cp", help="copy a model to a new name")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")
    p.set_defaults(func=_cmd_cp)

    p = sub.add_parser(
        "create", help="create a model from a Modelfile, a GGUF file or another model"
    )
    p.add_argument("name")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "-f", "--file", metavar="MODELFILE", help="an Ollama Modelfile (default: ./Modelfile)"
    )
    source.add_argument("--from", dest="source", metavar="FILE_OR_NAME")
    p.add_argument("--system", help="default system prompt")
    p.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="default option (repeatable)"
    )
    p.set_defaults(func=_cmd_create)

    p = sub.add_parser("run", help="chat with a model (or answer PROMPT and exit)")
    p.add_argument("name")
    p.add_argument("prompt", nargs="?", help="answer this and exit (stdin works too)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="option (repeatable)")
    p.add_argument("--verbose", action="store_true", help="print timings and tokens/s")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "serve", help="serve the Ollama and OpenAI APIs on LOCAL_LLM_HOST (127.0.0.1:11434)"
    )
    p.set_defaults(func=server_commands.cmd_serve)

    p = sub.add_parser("ps", help="list the models a running server has loaded")
    p.set_defaults(func=server_commands.cmd_ps)

    p = sub.add_parser("stop", help="unload a model from a running server now")
    p.add_argument("name")
    p.set_defaults(func=server_commands.cmd_stop)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (``sys.argv[1:]`` when omitted).

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(ModelLibrary(), args, sys.stdout)
    except LocalLLMError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
