"""Where ``aigw serve`` spends its time under load: ``python -m tests.bench.profile [--stream]``.

Starts the benchmark's vendor and a gateway on a real store, drives it with wrk (or
the async generator) and samples it with ``py-spy record`` (the ``bench`` extra).
Prints the functions with the most samples, by own time and including callees, and
keeps the collapsed stacks (``--out``) for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import loadgen, wrk
from .loadgen import Target
from .procs import API_PATH, Gateway, start_upstream
from .runner import BODY, STREAM_BODY, _arun


def summarize(collapsed: str, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "including callees:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--stream", action="store_true", help="profile streaming requests")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--out", type=Path, help="keep py-spy's collapsed stacks here")
    args = p.parse_args(argv)
    spy_exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not spy_exe:
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aigw-profile-") as tmp:
        work = Path(tmp)
        upstream = start_upstream(work, 1)
        gw = Gateway(work, upstream)
        aigw = gw.start(0)
        try:
            aigw.wait_answer(API_PATH, BODY, gw.key)
            target = Target("aigw", "127.0.0.1", aigw.port, API_PATH, gw.key)
            body = STREAM_BODY if args.stream else BODY
            raw = work / "stacks.txt"
            spy = subprocess.Popen(
                [
                    spy_exe,
                    "record",
                    "--pid",
                    str(aigw.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--duration",
                    str(int(args.seconds)),
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            result: list[float] = []

            def load() -> None:
                if wrk.available():
                    result.append(wrk.run(target, body, args.connections, args.seconds, cpu=1).rate)
                else:
                    result.append(_arun(loadgen.run_load(target, body, args.connections, args.seconds)).rate)

            th = threading.Thread(target=load)
            th.start()
            th.join()
            spy.wait(args.seconds + 30)
            print(f"{'streams' if args.stream else 'requests'}/s while sampled: {result[0]:,.0f}")
            text = raw.read_text()
            if args.out:
                args.out.write_text(text)
            print(summarize(text))
        finally:
            aigw.stop()
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
