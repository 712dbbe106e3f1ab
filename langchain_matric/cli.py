"""The `matric` command: `demo`, `generate`, `embed` and `probe`.

Example:
    $ matric demo
    $ matric probe --base-url http://127.0.0.1:8000/v1 --json
    $ matric generate "Say hi" --backend ollama --model llama3.2 --stream
    $ matric embed "first text" "second text" --backend openai
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_matric.errors import MatricError

if TYPE_CHECKING:
    from langchain_matric.backends import InferenceBackend


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matric", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="stream a chain, embed and retrieve, call a tool")
    for name, help_text in (("generate", "generate an answer"), ("embed", "embed texts")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--backend", choices=("ollama", "openai", "azure"), default=None)
        sub.add_argument(
            "--base-url", default=None, help="a URL, or several comma-separated (a pool)"
        )
        sub.add_argument("--model", default=None)
        if name == "generate":
            sub.add_argument("prompt")
            sub.add_argument("--system", default=None)
            sub.add_argument("--stream", action="store_true")
        else:
            sub.add_argument("texts", nargs="+")
    probe = commands.add_parser("probe", help="detect what a server is and can do")
    probe.add_argument(
        "--base-url", required=True, help="a URL, or several comma-separated: each is probed"
    )
    probe.add_argument("--backend", choices=("openai", "ollama", "auto"), default="auto")
    probe.add_argument("--model", default=None)
    probe.add_argument("--embed-model", default=None)
    probe.add_argument("--api-key", default=None)
    probe.add_argument("--runs", type=int, default=3)
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _split_urls(text: str) -> str | list[str]:
    """`--base-url`: one URL, or several comma-separated (an endpoint pool).

    Example:
        >>> _split_urls("http://a:1/v1"), _split_urls("http://a:1/v1, http://b:1/v1")
        ('http://a:1/v1', ['http://a:1/v1', 'http://b:1/v1'])
    """
    urls = [part.strip() for part in text.split(",") if part.strip()]
    return urls if len(urls) > 1 else text.strip()


def _probe(args: argparse.Namespace) -> int:
    """Probe the server, or each endpoint of a pool in turn (`--base-url A,B`)."""
    from langchain_matric._probe import probe  # noqa: PLC0415

    given = _split_urls(args.base_url)
    urls = [given] if isinstance(given, str) else given
    reports = []
    for number, url in enumerate(urls, 1):
        report = probe(
            url,
            backend=args.backend,
            model=args.model,
            embed_model=args.embed_model,
            api_key=args.api_key,
            runs=max(1, args.runs),
        )
        reports.append(report)
        if args.json:
            continue
        if len(urls) > 1:
            print(f"{'' if number == 1 else chr(10)}endpoint {number} of {len(urls)}:")
        print(report.to_table())
    if args.json:
        shown = [r.to_dict() for r in reports]
        print(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
    return 0 if all(r.api is not None for r in reports) else 1


def _backend(args: argparse.Namespace, purpose: str) -> InferenceBackend:
    from langchain_matric.backends import create_backend  # noqa: PLC0415
    from langchain_matric.config import InferenceConfig  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if args.base_url:
        overrides["base_url"] = _split_urls(args.base_url)
    if args.model:
        overrides["model" if purpose == "generation" else "embed_model"] = args.model
    config = InferenceConfig.load()
    default = config.default_generation if purpose == "generation" else config.default_embedding
    return create_backend(args.backend or default, **overrides)


def _generate(args: argparse.Namespace) -> int:
    from langchain_matric.backends import GenerationRequest, StreamingGeneration  # noqa: PLC0415

    backend = _backend(args, "generation")
    request = GenerationRequest.from_prompt(args.prompt, system=args.system)
    try:
        if args.stream and isinstance(backend, StreamingGeneration):
            for delta in backend.generate_stream(request):
                print(delta.text, end="", flush=True)
            print()
        else:
            print(backend.generate(request).text)
    finally:
        backend.close()
    return 0


def _embed(args: argparse.Namespace) -> int:
    backend = _backend(args, "embedding")
    try:
        for text, vector in zip(args.texts, backend.embed_texts(args.texts), strict=True):
            print(json.dumps({"text": text, "dimension": len(vector), "head": vector[:4]}))
    finally:
        backend.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `matric` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from langchain_matric._demo import run_demo  # noqa: PLC0415

            return run_demo()
        if args.command == "probe":
            return _probe(args)
        return _generate(args) if args.command == "generate" else _embed(args)
    except MatricError as error:
        print(f"matric: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
