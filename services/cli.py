"""Development CLI.

python -m services.cli token --user alice                 # a user token (1 hour)
python -m services.cli token --service rooms              # a service token
python -m services.cli migrate                            # migrate every service's database
python -m services.cli model nova --lod 2 -o nova.glb     # download an agent's model
buf curl ... 2>&1 | python -m services.cli details        # an error's details, decoded
python -m services.cli speak "Hello!" > hello.wav         # an agent speaks, through the edge
python -m services.cli seed                               # store the demo agents (avatar service)
python -m services.cli provider-token                     # a TTS provider token for Nova's voice
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.config import ConfigError, Settings
from services.common.server import authority_from

if TYPE_CHECKING:
    import grpc

SERVICES_WITH_SQL = ("avatar", "rooms", "token")
# A development token lives at most 30 days: longer-lived bearer tokens are a liability even in
# development, and a typo like --ttl 36000000 should not mint a year-long credential.
MAX_TTL_S = 30 * 24 * 3600
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}")
_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ADDR = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")


def _ttl(value: str) -> int:
    try:
        ttl = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if not 1 <= ttl <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(
            f"{ttl} is out of range: a token lives 1 to {MAX_TTL_S} seconds (30 days)"
        )
    return ttl


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a valid name: 1 to 128 characters of letters, digits and _.@:-, "
            "starting with a letter or digit"
        )
    return value


def _agent_id(value: str) -> str:
    if not _AGENT_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an agent id: 1 to 64 characters of a-z, 0-9, _ and -"
        )
    return value


def _lod(value: str) -> int:
    if value not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"{value!r}: the level of detail is 0, 1 or 2")
    return int(value)


def _addr(value: str) -> str:
    if not _ADDR.fullmatch(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not host:port")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tok = sub.add_parser(
        "token", help="mint a development user token (ARCONV_JWT_SECRET) or a service token"
    )
    who = tok.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=_name, help="user id (the token's sub)")
    who.add_argument("--service", type=_name, help="service name, for a role=service token")
    tok.add_argument(
        "--ttl", type=_ttl, default=3600, help=f"lifetime in seconds, 1 to {MAX_TTL_S} (3600)"
    )
    mig = sub.add_parser("migrate", help="bring every service's schema up to date")
    mig.add_argument("services", nargs="*", default=list(SERVICES_WITH_SQL))
    mod = sub.add_parser(
        "model", help="download an agent's avatar model (GLB) and check its SHA-256"
    )
    mod.add_argument("agent_id", type=_agent_id, help="the agent, e.g. nova")
    mod.add_argument("--lod", type=_lod, default=0, help="level of detail: 0 (default), 1 or 2")
    mod.add_argument("-o", "--output", help="file to write (default: <agent>-lod<N>.glb)")
    mod.add_argument(
        "--addr", type=_addr, default="localhost:8080", help="the edge (default localhost:8080)"
    )
    mod.add_argument(
        "--token",
        help="bearer token (default: $TOKEN, else a development token for user alice)",
    )
    say = sub.add_parser("speak", help="speak text in an agent's voice (WAV on stdout)")
    say.add_argument("text")
    say.add_argument("--user", type=_name, default="alice")
    say.add_argument("--agent", type=_agent_id, default="nova")
    say.add_argument(
        "--edge", type=_addr, default="localhost:8080", help="the edge (or voice) address"
    )
    sub.add_parser("seed", help="store the demo agents through the avatar service")
    ptok = sub.add_parser("provider-token", help="a room with an agent, then a TTS token")
    ptok.add_argument("--user", type=_name, default="alice")
    ptok.add_argument("--agent", type=_agent_id, default="nova")
    ptok.add_argument("--edge", type=_addr, default="localhost:8080", help="the edge address")
    cert = sub.add_parser(
        "dev-cert",
        help="a development CA and a certificate for the edge's TLS listener (ca.pem, cert.pem,"
        " key.pem)",
    )
    cert.add_argument("--out", default="var/tls", help="directory to write (default var/tls)")
    cert.add_argument(
        "--host", action="append", default=[], help="another name or IP the edge is reached by"
    )
    sub.add_parser(
        "details",
        help="decode error details read on stdin: buf curl's error JSON, or the base64 value "
        "of a grpc-status-details-bin trailer",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
            if settings.jwt_jwks_url:
                print(
                    "users' tokens come from the identity provider (ARCONV_JWT_JWKS_URL is set);"
                    " mint a service token with --service",
                    file=sys.stderr,
                )
                return 2
            print(authority.mint(args.user, ttl_s=args.ttl))
        else:
            print(authority.mint(f"service:{args.service}", ttl_s=args.ttl, role="service"))
        return 0
    if args.cmd in ("speak", "provider-token"):
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
        from services.avatar.demo import seed_demo_agents

        print(f"seeded {asyncio.run(seed_demo_agents(settings, settings.avatar_addr))} agents")
        return 0
    if args.cmd == "details":
        return decode_details(sys.stdin.read())
    if args.cmd == "dev-cert":
        from services.devcert import make_dev_cert

        made = make_dev_cert(Path(args.out), args.host)
        print(
            f"wrote {made.ca} (trust it: grpcurl -cacert {made.ca}), {made.cert} and {made.key};"
            f" ARCONV_EDGE_TLS_CERT={made.cert} ARCONV_EDGE_TLS_KEY={made.key}"
            " python -m services.edge"
        )
        return 0
    if args.cmd == "model":
        token = args.token or os.environ.get("TOKEN", "")
        if not token:
            if settings.env == "production":
                print("pass --token (or set TOKEN) with ARCONV_ENV=production", file=sys.stderr)
                return 2
            token = authority_from(settings).mint("alice", ttl_s=300)
        output = Path(args.output or f"{args.agent_id}-lod{args.lod}.glb")
        return asyncio.run(download_model(args.addr, token, args.agent_id, args.lod, output))
    from services.common.db import migrate

    for name in args.services:
        if name not in SERVICES_WITH_SQL:
            print(f"unknown service {name!r}; choose from {SERVICES_WITH_SQL}", file=sys.stderr)
            return 2
        steps = migrate(name, settings.service_database_url(name))
        print(f"{name}: migrated ({'; '.join(steps)})" if steps else f"{name}: up to date")
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


# Times a download cut off under way (its replica died, the edge lost it) is started again.
DOWNLOAD_ATTEMPTS = 3


async def download_model(addr: str, token: str, agent_id: str, lod: int, output: Path) -> int:
    """Streams DownloadModel into `output`, checking size and SHA-256 against the LOD's metadata.

    The file appears only when complete and verified (written beside it, then renamed). A
    download cut off with a status a client resumes on (services.common.resumable) starts
    again from the beginning, at most DOWNLOAD_ATTEMPTS times in all.
    """
    import grpc
    from arconv.avatar.v1 import avatar_service_pb2, avatar_service_pb2_grpc

    from services.common.resumable import resumable

    partial = output.with_name(output.name + ".part")
    attempt = 0
    while True:
        attempt += 1
        digest = hashlib.sha256()
        expected_sha, expected_size, size = "", -1, 0
        try:
            async with grpc.aio.insecure_channel(addr) as channel:
                stub = avatar_service_pb2_grpc.AvatarServiceStub(channel)
                call = stub.DownloadModel(
                    avatar_service_pb2.DownloadModelRequest(agent_id=agent_id, lod=lod),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=120,
                )
                with partial.open("wb") as out:
                    async for chunk in call:
                        if chunk.HasField("lod"):
                            expected_sha, expected_size = chunk.lod.sha256, chunk.lod.size_bytes
                        if chunk.offset != size:
                            print(
                                f"error: chunk at offset {chunk.offset}, expected {size}",
                                file=sys.stderr,
                            )
                            return 1
                        out.write(chunk.data)
                        digest.update(chunk.data)
                        size += len(chunk.data)
            break
        except grpc.aio.AioRpcError as exc:
            partial.unlink(missing_ok=True)
            if size and attempt < DOWNLOAD_ATTEMPTS and resumable(exc.code(), exc.details()):
                print(
                    f"download cut off after {size} bytes ({exc.code().name}: {exc.details()});"
                    " starting again",
                    file=sys.stderr,
                )
                await asyncio.sleep(0.5 * attempt)
                continue
            return _download_failed(exc, addr)
    if digest.hexdigest() != expected_sha or size != expected_size:
        partial.unlink(missing_ok=True)
        print(
            f"error: the download does not match the avatar's metadata "
            f"(sha256 {digest.hexdigest()} vs {expected_sha}, {size} vs {expected_size} bytes)",
            file=sys.stderr,
        )
        return 1
    partial.replace(output)
    print(f"{output}: {size} bytes, sha256 {expected_sha} (verified)")
    return 0


def _download_failed(exc: grpc.aio.AioRpcError, addr: str) -> int:
    """Says why a download failed, with a hint for the usual causes; the exit status."""
    import grpc

    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        print(f"is the mesh running (make run) and the edge at {addr}?", file=sys.stderr)
    elif exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        print(
            "the avatar is not READY yet: watch it with AvatarService/WatchAvatar",
            file=sys.stderr,
        )
    return 1


def decode_details(text: str) -> int:
    """Prints an error with each google.rpc detail decoded into its fields (JSON).

    buf curl prints an error's details as a type and a base64 value: the google.rpc types are
    not in the schema it is given. This reads that output (or a bare grpc-status-details-bin
    value) and prints the same error with every detail's fields.
    """
    import base64
    import json

    from google.protobuf import any_pb2, json_format
    from google.protobuf.message import DecodeError
    from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the types)

    def unb64(value: str) -> bytes:
        value = value.strip().translate(str.maketrans("-_", "+/"))
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)

    start = text.find("{")
    try:
        if start >= 0:
            error = json.JSONDecoder().raw_decode(text[start:])[0]
            details = []
            for item in error.get("details", []):
                packed = any_pb2.Any(
                    type_url=f"type.googleapis.com/{item['type']}", value=unb64(item["value"])
                )
                details.append(json.loads(json_format.MessageToJson(packed)))
            error["details"] = details
        else:
            status = status_pb2.Status.FromString(unb64(text))
            error = json.loads(json_format.MessageToJson(status))
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        print(
            f"error: stdin is neither buf curl's error JSON nor a base64 google.rpc.Status ({exc})",
            file=sys.stderr,
        )
        return 2
    except json_format.Error as exc:
        print(f"error: a detail could not be decoded: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(error, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
