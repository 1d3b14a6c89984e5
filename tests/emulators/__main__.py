"""Run one emulator in the foreground: ``python -m tests.emulators notion|pinecone --port N``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators")
    parser.add_argument("service", choices=["notion", "pinecone"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"tests.emulators.{args.service}")
    emulator = module.create()
    print(f"{args.service} emulator on http://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
