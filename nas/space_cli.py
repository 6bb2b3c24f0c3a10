"""`nas space`: list the search spaces and show one (choices per stage, size, ops, known points)."""

from __future__ import annotations

import argparse
import json

from search_space.errors import UserError


def cmd_space_list(args: argparse.Namespace) -> int:
    from search_space.spaces import SPACES

    for name, space in SPACES.items():
        print(f"{name:<9} around {space.seed_name:<11} {len(space.choices())} choices, "
              f"{space.size():.2e} points ({space.description}{', NL searched' if space.search_nl else ''})")
    return 0


def cmd_space_show(args: argparse.Namespace) -> int:
    from search_space.spaces import describe, get_space

    space = get_space(args.name)
    if args.resolution is not None and args.resolution < 1:
        raise UserError(f"--resolution {args.resolution}: must be a positive integer")
    if args.json:
        print(json.dumps(space.to_dict(), indent=1))
        return 0
    print(describe(space, resolution=args.resolution))
    if args.ops:
        print()
        for op in space.all_ops(resolution=args.resolution):
            print(op.key)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `space list` and `space show NAME` to the `nas` command's sub-parsers."""
    p = sub.add_parser("space", help="search spaces: list them, show one's choices, size and latency ops")
    space_sub = p.add_subparsers(dest="space_command", required=True)

    q = space_sub.add_parser("list", help="the built-in search spaces")
    q.set_defaults(func=cmd_space_list)

    q = space_sub.add_parser("show", help="a space's choices per stage, its size, its latency ops, known points")
    q.add_argument("name", help="large, small, large-nl, small-nl, or a space JSON file")
    q.add_argument("--resolution", type=int, help="input resolution for the op count (default: the space's, 224)")
    q.add_argument("--ops", action="store_true", help="also list every latency op key of the space")
    q.add_argument("--json", action="store_true", help="print the space as JSON (a template for a custom space)")
    q.set_defaults(func=cmd_space_show)
