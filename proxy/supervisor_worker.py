"""One worker of ``aigw serve --workers N``, started by its supervisor (``proxy.supervisor``):
``python -m proxy.supervisor_worker --db … --listen … --admin-listen … --redis-url … --index I --rundir D``."""

from __future__ import annotations

import argparse
import sys

from .serve import WorkerRole, run_server


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="aigw-worker")
    p.add_argument("--db", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--admin-listen", required=True)
    p.add_argument("--redis-url", default="")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--rundir", required=True)
    a = p.parse_args(argv)
    role = WorkerRole(a.index, a.rundir)
    return run_server(a.db, listen=a.listen, admin_listen=a.admin_listen, redis_url=a.redis_url, role=role)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
