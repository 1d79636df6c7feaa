"""The one list of idempotent methods: which calls may be sent twice, and by whom.

A method here may run twice with the same outcome: a read, or a write keyed so a repeat
changes nothing. Each says where a repeat is sent:

- EDGE: the Envoy edge retries it on another replica when one answers UNAVAILABLE or its
  connection is reset or refused (services.edge). Only public unary methods: the edge refuses
  every *InternalService path, and streams are resumed by the client, never retried.
- MESH: the service channels retry it on UNAVAILABLE within the call's deadline
  (services.common.clients, by the gRPC service config). Only the methods the services call on
  each other.

Calls that count usage (VerifyProviderToken with `consume`, RefundProviderUsage) are in neither.
"""

from __future__ import annotations

from collections.abc import Mapping

EDGE = "edge"
MESH = "mesh"
BOTH = frozenset({EDGE, MESH})
EDGE_ONLY = frozenset({EDGE})  # public methods no service calls on another
MESH_ONLY = frozenset({MESH})  # internal methods the edge never routes

# Service -> method -> where it is retried. The order is the order of the edge's routes and of
# the channels' service config.
IDEMPOTENT: Mapping[str, Mapping[str, frozenset[str]]] = {
    "arconv.rooms.v1.RoomService": {"GetRoom": BOTH, "ListRooms": BOTH, "ListMessages": BOTH},
    # AppendMessage repeats are dropped by the message's idempotency key.
    "arconv.rooms.v1.RoomInternalService": {"AppendMessage": MESH_ONLY},
    # Repeated state notifications are ignored.
    "arconv.stream.v1.StreamInternalService": {"NotifyRoomState": MESH_ONLY},
    "arconv.avatar.v1.AvatarService": {
        "GetAgent": BOTH,
        "ListAgents": BOTH,
        "GetAvatar": BOTH,
        "ComputeVisemes": EDGE_ONLY,
        "GetVisemeMappings": EDGE_ONLY,
    },
    # An upsert.
    "arconv.avatar.v1.AvatarInternalService": {"UpsertAgent": MESH_ONLY},
    # A revocation.
    "arconv.token.v1.TokenInternalService": {"RevokeRoomTokens": MESH_ONLY},
    "arconv.token.v1.TokenService": {"GetUsage": EDGE_ONLY, "GetJwks": EDGE_ONLY},
    "arconv.voice.v1.VoiceService": {"ListVoices": EDGE_ONLY},
}


def retried_by(who: str) -> dict[str, tuple[str, ...]]:
    """Service -> the methods `who` (EDGE or MESH) retries, services without one left out."""
    found = {s: tuple(m for m, by in ms.items() if who in by) for s, ms in IDEMPOTENT.items()}
    return {s: ms for s, ms in found.items() if ms}
