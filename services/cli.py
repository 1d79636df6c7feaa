"""Development CLI.

python -m services.cli token --user alice            # a user token (1 hour)
python -m services.cli token --service rooms         # a service token
python -m services.cli migrate                       # migrate every service's database
python -m services.cli speak "Hello!" > hello.wav    # an agent speaks, through the edge
python -m services.cli seed                          # store the demo agents (avatar service)
python -m services.cli provider-token                # a TTS provider token for Nova's voice
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
    say = sub.add_parser("speak", help="speak text in an agent's voice (WAV on stdout)")
    say.add_argument("text")
    say.add_argument("--user", default="alice")
    say.add_argument("--agent", default="nova")
    say.add_argument("--edge", default="localhost:8080", help="the edge (or voice) address")
    sub.add_parser("seed", help="store the demo agents through the avatar service")
    ptok = sub.add_parser("provider-token", help="a room with an agent, then a TTS token")
    ptok.add_argument("--user", default="alice")
    ptok.add_argument("--agent", default="nova")
    ptok.add_argument("--edge", default="localhost:8080", help="the edge address")
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
    if args.cmd in ("speak", "provider-token"):
        import asyncio

        if settings.env == "production":
            print("refusing to mint tokens with ARCONV_ENV=production", file=sys.stderr)
            return 2
        user_token = authority_from(settings).mint(args.user, ttl_s=600)
        if args.cmd == "provider-token":
            print(asyncio.run(_provider_token(args.edge, user_token, args.agent)))
        else:
            wav = asyncio.run(_speak(args.edge, user_token, args.agent, args.text))
            sys.stdout.buffer.write(wav)
        return 0
    if args.cmd == "seed":
        import asyncio

        from services.avatar.demo import seed_demo_agents

        print(f"seeded {asyncio.run(seed_demo_agents(settings, settings.avatar_addr))} agents")
        return 0
    from services.common.db import migrate

    for name in args.services:
        if name not in SERVICES_WITH_SQL:
            print(f"unknown service {name!r}; choose from {SERVICES_WITH_SQL}", file=sys.stderr)
            return 2
        migrate(name, settings.service_database_url(name))
        print(f"{name}: migrated")
    return 0


async def _provider_token(edge: str, user_token: str, agent_id: str) -> str:
    """A room with the agent (created or resumed), then a provider token for its voice."""
    import grpc
    from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
    from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
    from arconv.token.v1 import token_service_pb2 as token_pb
    from arconv.token.v1 import token_service_pb2_grpc as token_grpc

    user = (("authorization", f"Bearer {user_token}"),)
    async with grpc.aio.insecure_channel(edge) as ch:
        room = await rooms_grpc.RoomServiceStub(ch).CreateRoom(
            rooms_pb.CreateRoomRequest(agent_id=agent_id), metadata=user
        )
        issued = await token_grpc.TokenServiceStub(ch).IssueProviderToken(
            token_pb.IssueProviderTokenRequest(
                room_id=room.room.room_id, operations=["tts.synthesize", "tts.viseme_stream"]
            ),
            metadata=user,
        )
        return str(issued.token)


async def _speak(edge: str, user_token: str, agent_id: str, text: str) -> bytes:
    """Synthesize with a fresh provider token: the WAV."""
    import grpc
    from arconv.voice.v1 import voice_service_pb2 as voice_pb
    from arconv.voice.v1 import voice_service_pb2_grpc as voice_grpc

    token = await _provider_token(edge, user_token, agent_id)
    audio = b""
    async with grpc.aio.insecure_channel(edge) as ch:
        call = voice_grpc.VoiceServiceStub(ch).Synthesize(
            voice_pb.SynthesizeRequest(text=text),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        async for msg in call:
            if msg.WhichOneof("event") == "audio":
                audio += msg.audio.data
    return audio


if __name__ == "__main__":
    sys.exit(main())
