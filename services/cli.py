"""Development CLI.

python -m services.cli token --user alice            # a user token (1 hour)
python -m services.cli token --service rooms         # a service token
python -m services.cli migrate                       # migrate every service's database
"""

from __future__ import annotations

import argparse
import sys

from services.common.config import ConfigError, Settings
from services.common.server import authority_from

SERVICES_WITH_SQL = ("avatar", "rooms", "token")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tok = sub.add_parser("token", help="mint a development token (ARCONV_JWT_SECRET)")
    who = tok.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id (the token's sub)")
    who.add_argument("--service", help="service name, for a role=service token")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    mig = sub.add_parser("migrate", help="bring every service's schema up to date")
    mig.add_argument("services", nargs="*", default=list(SERVICES_WITH_SQL))
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "token":
        if settings.env == "production":
            print("refusing to mint tokens with ARCONV_ENV=production", file=sys.stderr)
            return 2
        authority = authority_from(settings)
        if args.user:
            print(authority.mint(args.user, ttl_s=args.ttl))
        else:
            print(authority.mint(f"service:{args.service}", ttl_s=args.ttl, role="service"))
        return 0
    from services.common.db import migrate

    for name in args.services:
        if name not in SERVICES_WITH_SQL:
            print(f"unknown service {name!r}; choose from {SERVICES_WITH_SQL}", file=sys.stderr)
            return 2
        migrate(name, settings.service_database_url(name))
        print(f"{name}: migrated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
