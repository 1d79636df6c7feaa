// The mesh's services over gRPC-web (Connect-ES), and errors said in plain words.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AvatarService } from "../gen/arconv/avatar/v1/avatar_service_pb";
import { RoomService } from "../gen/arconv/rooms/v1/rooms_service_pb";
import { StreamService } from "../gen/arconv/stream/v1/stream_service_pb";
import { TokenService } from "../gen/arconv/token/v1/token_service_pb";

export interface Api {
  readonly avatars: Client<typeof AvatarService>;
  readonly rooms: Client<typeof RoomService>;
  readonly stream: Client<typeof StreamService>;
  readonly tokens: Client<typeof TokenService>;
}

/** Clients of the four user-facing services through the edge, with the user's bearer token. */
export function connect(edge: string, token: string): Api {
  const bearer: Interceptor = (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl: edge, interceptors: [bearer] });
  return {
    avatars: createClient(AvatarService, transport),
    rooms: createClient(RoomService, transport),
    stream: createClient(StreamService, transport),
    tokens: createClient(TokenService, transport),
  };
}

/** The subject of a JWT, read without verifying it (display only; the server verifies). */
export function tokenSubject(jwt: string): string | undefined {
  try {
    const part = jwt.split(".")[1] ?? "";
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const sub: unknown = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** What went wrong, for a person: the status in words, then the server's own message. */
export function plainError(err: unknown, doing: string): string {
  if (err instanceof DOMException && err.name === "AbortError") return "";
  const e = ConnectError.from(err);
  const detail = e.rawMessage ? ` (${e.rawMessage})` : "";
  switch (e.code) {
    case Code.Unauthenticated:
      return (
        "Your sign-in token was refused: it is missing, expired or not issued by this mesh. " +
        "Paste a fresh one (python -m services.cli token --user NAME)."
      );
    case Code.PermissionDenied:
      return `You are not allowed to do that while ${doing}${detail}.`;
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
      return `The mesh could not be reached while ${doing}. Is make run still running?${detail}`;
    case Code.NotFound:
      return `Not found while ${doing}${detail}.`;
    case Code.FailedPrecondition:
      return `That is not possible right now (${doing})${detail}.`;
    case Code.InvalidArgument:
      return `The request was refused while ${doing}${detail}.`;
    case Code.ResourceExhausted:
      return `Too many requests; wait a moment and try again${detail}.`;
    case Code.DeadlineExceeded:
      return `The mesh took too long while ${doing}; try again.`;
    case Code.DataLoss:
      return `The stored avatar is damaged; regenerate it${detail}.`;
    default:
      return `Something went wrong while ${doing}: ${Code[e.code]}${detail}.`;
  }
}

export { Code, ConnectError };
