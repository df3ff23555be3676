"""``apviz operator hash-password``: make the value of ``operator.password_hash``.

The password itself is never written anywhere: it is read without echo (or from standard input for
scripts), hashed with scrypt and a random salt, and only the hash is printed for the config file.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def cmd_hash_password(args: argparse.Namespace) -> int:
    from apviz.server.operator import hash_password

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("operator password: ")
        if getpass.getpass("again: ") != password:
            print("apviz: the two passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("apviz: use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def add_operator_parser(sub: Any) -> None:
    op = sub.add_parser("operator", help="operator console tools")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    hp = op_sub.add_parser(
        "hash-password",
        help="print the hash of an operator password for [operator] password_hash",
        description="Read a password (twice, without echo; or one line from standard input) and print "
        "its scrypt hash for `password_hash` in the [operator] section.",
    )
    hp.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hp.set_defaults(func=cmd_hash_password)
