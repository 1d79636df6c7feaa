// A small browser client of the arconv edge: gRPC-web through Envoy with Connect.
//
// Query string: `edge` (the Envoy URL, default http://<this host>:8080) and `token` (a user's
// bearer JWT, e.g. from `python -m services.cli token --user alice`).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AvatarService, type Agent } from "../gen/arconv/avatar/v1/avatar_service_pb";
import { RoomService, RoomStatus, type Room } from "../gen/arconv/rooms/v1/rooms_service_pb";
import {
  MarkerType,
  StreamEndReason,
  StreamService,
  type ConverseResponse,
} from "../gen/arconv/stream/v1/stream_service_pb";

const params = new URLSearchParams(location.search);
const edge = params.get("edge") ?? `${location.protocol}//${location.hostname}:8080`;
const token = params.get("token") ?? "";

const bearer: Interceptor = (next) => async (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createGrpcWebTransport({ baseUrl: edge, interceptors: [bearer] });
const avatars = createClient(AvatarService, transport);
const rooms = createClient(RoomService, transport);
const stream = createClient(StreamService, transport);

const $ = <T extends HTMLElement = HTMLElement>(id: string): T =>
  document.getElementById(id) as T;

let roomId = "";
let replyStream = "";
let subscription: AbortController | undefined;

function showError(err: unknown): void {
  const e = ConnectError.from(err);
  $("error").textContent = `${Code[e.code]}: ${e.rawMessage}`;
}

function subject(jwt: string): string {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).sub ?? "?");
  } catch {
    return "?";
  }
}

async function loadAgents(): Promise<void> {
  const list = $("agents");
  const res = await avatars.listAgents({ pageSize: 50 });
  list.replaceChildren(...res.agents.map(agentButton));
  list.dataset.state = "ready";
}

function agentButton(agent: Agent): HTMLLIElement {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.textContent = agent.name;
  button.dataset.agentId = agent.agentId;
  button.addEventListener("click", () => openRoom(agent.agentId).catch(showError));
  li.append(button);
  return li;
}

function showRoom(room: Room): void {
  $("room").classList.remove("hidden");
  $("room-id").textContent = room.roomId;
  $("room-status").textContent = RoomStatus[room.status];
}

async function openRoom(agentId: string): Promise<void> {
  subscription?.abort();
  const res = await rooms.createRoom({ agentId });
  if (!res.room) throw new Error("CreateRoom returned no room");
  roomId = res.room.roomId;
  showRoom(res.room);
  subscription = new AbortController();
  subscribe(roomId, subscription.signal).catch((err) => {
    if (!subscription?.signal.aborted) showError(err);
  });
}

async function subscribe(room: string, signal: AbortSignal): Promise<void> {
  const state = $("subscription");
  state.textContent = "connecting";
  try {
    for await (const res of stream.subscribe({ roomId: room }, { signal })) {
      if (res.event) onEvent(res.event);
    }
    state.textContent = "closed";
  } catch (err) {
    state.textContent = "failed";
    throw err;
  }
}

function onEvent(event: ConverseResponse): void {
  const kind = event.kind;
  switch (kind.case) {
    case "joined":
      $("subscription").textContent = "subscribed";
      $("room").dataset.state = "subscribed";
      break;
    case "streamStarted":
      replyStream = kind.value.streamId;
      $("reply").textContent = "";
      $("markers").replaceChildren();
      $("stream-status").textContent = "streaming";
      $("stream-status").dataset.streamId = replyStream;
      break;
    case "streamChunk":
      if (kind.value.streamId !== replyStream) break;
      $("reply").append(kind.value.text);
      for (const m of kind.value.markers) {
        const li = document.createElement("li");
        li.textContent = `${MarkerType[m.type].toLowerCase()}:${m.value}`;
        $("markers").append(li);
      }
      break;
    case "streamEnded":
      if (kind.value.streamId !== replyStream) break;
      $("stream-status").textContent = `ended: ${StreamEndReason[kind.value.reason]}`;
      $("stream-status").dataset.chunks = String(kind.value.totalChunks);
      break;
    case "streamError":
      $("error").textContent = `${Code[kind.value.code] ?? kind.value.code}: ${kind.value.message}`;
      break;
    case "roomState":
      $("room-status").textContent = RoomStatus[kind.value.status];
      break;
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("message");
  const content = input.value.trim();
  if (!roomId || !content) return;
  $("error").textContent = "";
  stream
    .sendMessage({ roomId, content, clientMessageId: crypto.randomUUID() })
    .then(() => {
      input.value = "";
    })
    .catch(showError);
});

$("edge").textContent = edge;
$("user").textContent = subject(token);
loadAgents().catch((err) => {
  $("agents").dataset.state = "failed";
  showError(err);
});
