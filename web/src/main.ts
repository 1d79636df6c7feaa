// The reference AR client of the arconv mesh: sign in, pick an agent, talk to its avatar.
//
// URL parameters (query or fragment): `token` (a user's bearer JWT; `make run` puts one in the
// fragment, which is never sent to the web server), `edge` (the Envoy URL, default
// http://<this host>:8080), `agent` (open this agent at once), `lod` (0-2, the model detail),
// `still` (1: no idle motion or blinks, for pixel-exact screenshots), `voice` (off: do not use the
// mesh's VoiceService; speak with the browser's speechSynthesis, or silently).
import { AvatarStatus, type Agent, type Avatar } from "../gen/arconv/avatar/v1/avatar_service_pb";
import {
  MessageStatus,
  RoomStatus,
  SenderType,
  type Message,
} from "../gen/arconv/rooms/v1/rooms_service_pb";
import {
  MarkerType,
  StreamEndReason,
  type ConverseResponse,
  type Marker,
} from "../gen/arconv/stream/v1/stream_service_pb";
import { Code, ConnectError, connect, plainError, tokenSubject, type Api } from "./api";
import { AvatarView, type AnimationController } from "./avatar";
import { BrowserSpeechEngine, SpeechController, type SpeechEngine, type Utterance } from "./speech";
import { ProviderTokens, VoiceEngine } from "./voice";
import { arSupported, enterAr } from "./xr";

type SpeechCue = Extract<ConverseResponse["kind"], { case: "speechCue" }>["value"];

const params = new URLSearchParams(location.hash.slice(1) || location.search);
const query = new URLSearchParams(location.search);
const param = (k: string): string | null => params.get(k) ?? query.get(k);
const edge = param("edge") ?? `${location.protocol}//${location.hostname}:8080`;
const still = param("still") === "1";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

// ---------------------------------------------------------------- state

let api: Api | undefined;
let agents: Agent[] = [];
let roomId = "";
let roomStatus = RoomStatus.UNSPECIFIED;
let lastEventId = 0n;
let repeats = 0;
let reconnects = 0;
let connection: "offline" | "connecting" | "live" | "reconnecting" | "closed" = "offline";
let subscription: AbortController | undefined;
let activeStream = "";
let soundOn = localStorage.getItem("arconv.sound") !== "off";
let avatarStatus = "none";
const played: string[] = [];

interface Reply {
  el: HTMLElement;
  body: HTMLElement;
  text: string;
  markers: { at: number; marker: Marker }[];
  fired: number;
  cues: number;
  ended: boolean;
  cutAt?: number;
}
const replies = new Map<string, Reply>();

const view = new AvatarView($<HTMLCanvasElement>("avatar"), still);
let controller: AnimationController | undefined;
const browserSpeech = new BrowserSpeechEngine();
let voice: VoiceEngine | undefined;
/** The best way to speak: the mesh's voice, else the browser's, else silently on the cue clock. */
function preferredEngine(): SpeechEngine | undefined {
  if (voice && !speech.unavailable.has("voice")) return voice;
  if (!speech.unavailable.has("browser") && BrowserSpeechEngine.available()) return browserSpeech;
  return undefined;
}
const speech: SpeechController = new SpeechController(preferredEngine, () => soundOn);
speech.onIdle = () => {
  updateControls();
  // Markers after the last spoken character (or of a reply with nothing to say) still count.
  for (const [id, r] of replies) if (r.ended) fireMarkers(id, r.text.length);
};

// ---------------------------------------------------------------- debug state for tests

const debugState = () => {
  const s = speech.state();
  return Object.freeze({
    clip: controller?.currentClip ?? "",
    morphs: controller?.activeMorphs() ?? {},
    audioMs: Math.round(s.audioMs),
    speaking: s.speaking,
    speechStream: s.streamId,
    playedChars: s.playedChars,
    engine: s.engine,
    lastEventId: Number(lastEventId),
    repeats,
    reconnects,
    connection,
    roomId,
    roomStatus: RoomStatus[roomStatus],
    activeStream,
    avatarStatus,
    capabilities: controller?.capabilities,
    played: [...played],
    missing: [...(controller?.missing ?? [])],
    frames: view.frames,
    faceRect: view.faceRect(),
  });
};
Object.defineProperty(window, "arconv", { get: debugState, enumerable: true });

// ---------------------------------------------------------------- UI helpers

function setError(text: string): void {
  $("error").textContent = text;
  $("error").hidden = text === "";
}

function setConnection(state: typeof connection, detail = ""): void {
  connection = state;
  const el = $("connection");
  el.dataset.state = state;
  const words = {
    offline: "Not connected",
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Connection lost — reconnecting…",
    closed: "Room ended",
  };
  el.textContent = words[state] + (detail ? ` ${detail}` : "");
}

function updateControls(): void {
  const open = roomId !== "" && roomStatus !== RoomStatus.ENDED;
  const speaking = speech.isSpeaking();
  $<HTMLButtonElement>("interrupt").disabled = !(open && (activeStream !== "" || speaking));
  $<HTMLButtonElement>("pause").disabled = !open;
  $<HTMLButtonElement>("pause").textContent = roomStatus === RoomStatus.PAUSED ? "Resume" : "Pause";
  $<HTMLInputElement>("message").disabled = !open || roomStatus === RoomStatus.PAUSED;
  $<HTMLButtonElement>("send").disabled = !open || roomStatus === RoomStatus.PAUSED;
  $<HTMLButtonElement>("sound").textContent = soundOn ? "Sound on" : "Sound off";
  $<HTMLButtonElement>("sound").setAttribute("aria-pressed", String(soundOn));
  $("stage").dataset.speaking = String(speaking);
}

function statusLabel(status: AvatarStatus | undefined): string {
  switch (status) {
    case AvatarStatus.READY:
      return "avatar ready";
    case AvatarStatus.GENERATING:
    case AvatarStatus.PENDING:
      return "generating";
    case AvatarStatus.FAILED:
      return "avatar failed";
    default:
      return "no avatar yet";
  }
}

function scrollTranscript(): void {
  const t = $("transcript");
  t.scrollTop = t.scrollHeight;
}

function bubble(kind: "user" | "agent", text: string, id?: string): { el: HTMLElement; body: HTMLElement } {
  $("transcript-empty").hidden = true;
  const el = document.createElement("li");
  el.className = `msg ${kind}`;
  if (id) el.dataset.streamId = id;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = kind === "user" ? "You" : currentAgentName();
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = text;
  el.append(who, body);
  $("transcript").append(el);
  scrollTranscript();
  return { el, body };
}

function currentAgentName(): string {
  return $("agent-name").textContent || "Agent";
}

function tag(el: HTMLElement, text: string, cls: string): void {
  const t = document.createElement("span");
  t.className = `tag ${cls}`;
  t.textContent = text;
  el.querySelector(".who")?.after(t);
}

function chip(r: Reply, m: Marker): void {
  let chips = r.el.querySelector<HTMLElement>(".chips");
  if (!chips) {
    chips = document.createElement("div");
    chips.className = "chips";
    r.el.append(chips);
  }
  const c = document.createElement("span");
  c.className = `chip ${MarkerType[m.type].toLowerCase()}`;
  c.textContent = `${MarkerType[m.type].toLowerCase()}:${m.value}`;
  chips.append(c);
}

// ---------------------------------------------------------------- sign in, agents

async function signIn(token: string): Promise<void> {
  api = connect(edge, token);
  $("user").textContent = tokenSubject(token) ?? "—";
  $("agents").dataset.state = "loading";
  try {
    const res = await api.avatars.listAgents({ pageSize: 50 });
    agents = res.agents;
  } catch (err) {
    $("agents").dataset.state = "failed";
    const e = ConnectError.from(err);
    if (e.code === Code.Unauthenticated) showSignIn(plainError(err, "signing in"));
    else setError(plainError(err, "listing the agents"));
    return;
  }
  sessionStorage.setItem("arconv.token", token);
  $("signin").hidden = true;
  setError("");
  renderAgents();
  $("agents").dataset.state = "ready";
  void refreshAvatarStatuses();
  const wanted = param("agent") ?? localStorage.getItem("arconv.agent");
  const first = agents.find((a) => a.agentId === wanted) ?? agents[0];
  if (first) await openRoom(first.agentId);
}

function showSignIn(message: string): void {
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("signin-error").hidden = message === "";
  $<HTMLTextAreaElement>("token").focus();
}

function renderAgents(): void {
  $("agents").replaceChildren(
    ...agents.map((a) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "agent";
      b.dataset.agentId = a.agentId;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = a.name;
      const status = document.createElement("span");
      status.className = "avatar-status";
      status.textContent = "…";
      b.append(name, status);
      b.addEventListener("click", () => void openRoom(a.agentId));
      li.append(b);
      return li;
    }),
  );
}

async function refreshAvatarStatuses(): Promise<void> {
  await Promise.all(
    agents.map(async (a) => {
      let status: AvatarStatus | undefined;
      try {
        status = (await api?.avatars.getAvatar({ agentId: a.agentId }))?.avatar?.status;
      } catch {
        status = undefined;
      }
      showAgentStatus(a.agentId, status);
    }),
  );
}

function showAgentStatus(agentId: string, status: AvatarStatus | undefined, detail?: string): void {
  const b = document.querySelector<HTMLElement>(`.agent[data-agent-id="${agentId}"]`);
  const s = b?.querySelector<HTMLElement>(".avatar-status");
  if (!b || !s) return;
  s.textContent = detail ?? statusLabel(status);
  b.dataset.avatar = status === undefined ? "none" : AvatarStatus[status].toLowerCase();
}

// ---------------------------------------------------------------- room

async function openRoom(agentId: string): Promise<void> {
  if (!api) return;
  subscription?.abort();
  speech.cancel();
  replies.clear();
  activeStream = "";
  lastEventId = 0n;
  $("transcript").querySelectorAll(".msg").forEach((m) => m.remove());
  $("transcript-empty").hidden = false;
  document.querySelectorAll(".agent").forEach((b) => b.setAttribute("aria-current", String(b.getAttribute("data-agent-id") === agentId)));
  const agent = agents.find((a) => a.agentId === agentId);
  $("agent-name").textContent = agent?.name ?? agentId;
  $("agent-name").hidden = false;
  localStorage.setItem("arconv.agent", agentId);
  setError("");
  let resumed: boolean;
  try {
    const res = await api.rooms.createRoom({ agentId });
    if (!res.room) throw new Error("CreateRoom returned no room");
    roomId = res.room.roomId;
    roomStatus = res.room.status;
    resumed = res.resumed;
  } catch (err) {
    setError(plainError(err, "opening a room"));
    return;
  }
  voice?.stop();
  voice = param("voice") === "off" ? undefined : new VoiceEngine(edge, new ProviderTokens(api, roomId));
  speech.unavailable.delete("voice");
  $("room-id").textContent = roomId.slice(0, 8);
  $("room-id").title = roomId;
  $("room").dataset.resumed = String(resumed);
  updateControls();
  void loadAvatar(agentId);
  subscription = new AbortController();
  void follow(roomId, subscription.signal);
}

/** Subscribes, and resubscribes after the last event seen whenever the connection drops. */
async function follow(room: string, signal: AbortSignal): Promise<void> {
  let delay = 500;
  let first = true;
  while (!signal.aborted && api) {
    setConnection(first ? "connecting" : "reconnecting");
    try {
      for await (const res of api.stream.subscribe({ roomId: room, afterEventId: lastEventId }, { signal })) {
        if (res.event) await onEvent(res.event, first);
        if (connection === "live") delay = 500;
      }
      if (!signal.aborted) setConnection("closed");
      return;
    } catch (err) {
      if (signal.aborted) return;
      const e = ConnectError.from(err);
      if (e.code === Code.OutOfRange) {
        // Our cursor is older than the events kept: reload the history and start over.
        lastEventId = 0n;
        first = true;
        $("transcript").querySelectorAll(".msg").forEach((m) => m.remove());
        continue;
      }
      if ([Code.NotFound, Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument].includes(e.code)) {
        setConnection("offline");
        setError(plainError(err, "following the conversation"));
        return;
      }
      if (e.code === Code.FailedPrecondition) {
        roomStatus = RoomStatus.ENDED;
        setConnection("closed");
        updateControls();
        return;
      }
      // Anything else resumes after the last event: UNAVAILABLE, and the Internal or Unknown
      // of a stream the edge cut off because its replica died mid-reply.
      first = false;
      reconnects++;
      setConnection("reconnecting", `(retry in ${(delay / 1000).toFixed(1)} s)`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(8000, delay * 2);
    }
  }
}

async function onEvent(event: ConverseResponse, fresh: boolean): Promise<void> {
  if (event.eventId > 0n) {
    if (event.eventId <= lastEventId) {
      repeats++;
      return;
    }
    lastEventId = event.eventId;
  }
  const kind = event.kind;
  switch (kind.case) {
    case "joined":
      roomStatus = kind.value.status;
      if (fresh) {
        lastEventId = kind.value.lastEventId;
        await loadHistory();
      }
      activeStream = activeStream || kind.value.activeStreamId;
      setConnection("live");
      $("room").dataset.state = "subscribed";
      break;
    case "streamStarted":
      startReply(kind.value.streamId);
      break;
    case "streamChunk": {
      const r = replies.get(kind.value.streamId) ?? startReply(kind.value.streamId);
      const base = r.text.length;
      r.text += kind.value.text;
      if (r.cutAt === undefined) r.body.textContent = r.text;
      else renderCut(r, r.cutAt);
      for (const m of kind.value.markers) {
        r.markers.push({ at: base + m.offset, marker: m });
        chip(r, m);
      }
      scrollTranscript();
      break;
    }
    case "speechCue":
      onCue(kind.value);
      break;
    case "streamEnded":
      endReply(kind.value.streamId, kind.value.reason);
      break;
    case "streamError":
      setError(`${kind.value.message}${kind.value.retryable ? " You can try again." : ""}`);
      break;
    case "roomState":
      roomStatus = kind.value.status;
      if (roomStatus === RoomStatus.PAUSED) speech.pause();
      if (roomStatus === RoomStatus.ACTIVE) speech.resume();
      break;
  }
  $("last-event").textContent = String(lastEventId);
  updateControls();
}

async function loadHistory(): Promise<void> {
  if (!api) return;
  let messages: Message[];
  try {
    messages = (await api.rooms.listMessages({ roomId, pageSize: 50, latest: true })).messages;
  } catch (err) {
    setError(plainError(err, "loading the conversation so far"));
    return;
  }
  for (const m of messages) {
    if (m.senderType === SenderType.HUMAN) {
      bubble("user", m.content).el.dataset.history = "true";
      continue;
    }
    const { el } = bubble("agent", m.text, m.streamId);
    el.dataset.history = "true";
    if (m.status === MessageStatus.INTERRUPTED) tag(el, "interrupted", "cut");
    if (m.status === MessageStatus.FAILED) tag(el, "failed", "failed");
  }
}

function startReply(streamId: string): Reply {
  const existing = replies.get(streamId);
  if (existing) return existing;
  const { el, body } = bubble("agent", "", streamId);
  el.dataset.state = "streaming";
  const r: Reply = { el, body, text: "", markers: [], fired: 0, cues: 0, ended: false };
  replies.set(streamId, r);
  activeStream = streamId;
  return r;
}

function onCue(cue: SpeechCue): void {
  const r = replies.get(cue.streamId);
  if (!r || r.cutAt !== undefined) return;
  r.cues++;
  const u: Utterance = {
    streamId: cue.streamId,
    text: cue.text,
    textOffset: cue.textOffset,
    tone: cue.tone,
    rate: cue.rate,
    pitch: cue.pitch,
    visemes: cue.visemes.map((k) => ({ timeMs: k.timeMs, name: k.name, weight: k.weight })),
    durationMs: cue.durationMs,
  };
  speech.enqueue(u);
}

function endReply(streamId: string, reason: StreamEndReason): void {
  const r = replies.get(streamId);
  if (activeStream === streamId) activeStream = "";
  if (!r) return;
  r.ended = true;
  r.el.dataset.state = StreamEndReason[reason].toLowerCase();
  if (reason === StreamEndReason.INTERRUPTED) {
    speech.cancel(streamId);
    markCut(r, r.cutAt ?? r.text.length);
  } else if (reason === StreamEndReason.FAILED) {
    tag(r.el, "failed", "failed");
  }
  if (r.cues === 0) fireMarkers(streamId, r.text.length);
}

/** Shows what was heard, and the part the interruption cut off struck through. */
function markCut(r: Reply, at: number): void {
  renderCut(r, at);
  r.el.dataset.cutAt = String(at);
  if (!r.el.querySelector(".tag.cut")) tag(r.el, "interrupted", "cut");
}

function renderCut(r: Reply, at: number): void {
  // Nothing said: the empty body shows the page's "stopped before a word was said".
  if (!r.text) {
    r.body.replaceChildren();
    return;
  }
  const heard = document.createElement("span");
  heard.textContent = r.text.slice(0, at);
  const rest = document.createElement("s");
  rest.className = "unheard";
  rest.textContent = r.text.slice(at);
  r.body.replaceChildren(heard, rest);
}

/** Applies a reply's markers up to the `upTo`th character of its text. */
function fireMarkers(streamId: string, upTo: number): void {
  const r = replies.get(streamId);
  if (!r) return;
  while (r.fired < r.markers.length && r.markers[r.fired].at <= upTo) {
    const m = r.markers[r.fired++].marker;
    if (r.cutAt !== undefined && r.markers[r.fired - 1].at > r.cutAt) continue;
    applyMarker(m);
  }
}

function applyMarker(m: Marker): void {
  played.push(`${MarkerType[m.type].toLowerCase()}:${m.value}`);
  if (!controller) return;
  switch (m.type) {
    case MarkerType.EMOTION:
      controller.setEmotion(m.value, m.intensity);
      break;
    case MarkerType.GESTURE:
      controller.gesture(m.value);
      break;
    case MarkerType.POSE:
      controller.pose(m.value);
      break;
    default:
      break; // tone: already in the cue's rate and pitch
  }
}

view.onFrame(() => {
  const s = speech.state();
  controller?.setVisemes(s.visemes);
  if (s.speaking) fireMarkers(s.streamId, s.playedChars);
  $("audio-pos").textContent = s.speaking ? `${(s.audioMs / 1000).toFixed(1)} s` : "—";
  $("clip").textContent = controller?.currentClip || "—";
});

// ---------------------------------------------------------------- avatar

function deviceLod(): number {
  const forced = Number(param("lod"));
  if (param("lod") !== null && [0, 1, 2].includes(forced)) return forced;
  const memory = (navigator as Navigator & { deviceMemory?: number }).deviceMemory ?? 8;
  const mobile = matchMedia("(pointer: coarse)").matches;
  if (memory <= 2) return 2;
  return mobile || memory <= 4 || navigator.hardwareConcurrency <= 4 ? 1 : 0;
}

async function loadAvatar(agentId: string): Promise<void> {
  if (!api) return;
  const progress = $("progress");
  const say = (text: string, pct?: number): void => {
    progress.hidden = false;
    $("progress-text").textContent = text;
    $<HTMLProgressElement>("progress-bar").value = pct ?? 0;
  };
  try {
    avatarStatus = "loading";
    say("Looking for the avatar…");
    let avatar: Avatar | undefined;
    try {
      avatar = (await api.avatars.getAvatar({ agentId })).avatar;
    } catch (err) {
      if (ConnectError.from(err).code !== Code.NotFound) throw err;
    }
    if (!avatar || avatar.status === AvatarStatus.FAILED) {
      say("Generating the avatar…");
      avatar = (await api.avatars.generateAvatar({ agentId, force: avatar !== undefined })).avatar;
    }
    if (avatar?.status !== AvatarStatus.READY) {
      for await (const w of api.avatars.watchAvatar({ agentId })) {
        avatar = w.avatar;
        const p = avatar?.progress;
        say(`Generating the avatar: ${p?.stage || "queued"}`, p?.percent ?? 0);
        showAgentStatus(agentId, avatar?.status, p ? `generating ${p.percent}%` : undefined);
      }
    }
    showAgentStatus(agentId, avatar?.status);
    if (avatar?.status !== AvatarStatus.READY) {
      throw new Error(`the avatar could not be generated${avatar?.error ? `: ${avatar.error}` : ""}`);
    }
    const levels = avatar.lods.map((l) => l.level);
    const want = deviceLod();
    const lod = levels.includes(want) ? want : Math.min(...levels);
    const parts: Uint8Array[] = [];
    let size = 0;
    let got = 0;
    for await (const chunk of api.avatars.downloadModel({ agentId, lod })) {
      if (chunk.lod) size = Number(chunk.lod.sizeBytes);
      parts.push(chunk.data);
      got += chunk.data.length;
      say(`Downloading the model (LOD ${lod})`, size ? Math.round((100 * got) / size) : 0);
    }
    const glb = new Uint8Array(got);
    let at = 0;
    for (const p of parts) {
      glb.set(p, at);
      at += p.length;
    }
    say("Preparing the avatar…", 100);
    controller = await view.load(glb);
    avatarStatus = "ready";
    $("lod").textContent = String(lod);
    $("stage").dataset.avatar = "ready";
    progress.hidden = true;
  } catch (err) {
    avatarStatus = "failed";
    progress.hidden = true;
    setError(err instanceof ConnectError ? plainError(err, "loading the avatar") : `Avatar: ${String((err as Error).message ?? err)}.`);
  }
}

// ---------------------------------------------------------------- composer and controls

async function interrupt(): Promise<void> {
  if (!api || !roomId) return;
  const streamId = activeStream || speech.state().streamId;
  const r = replies.get(streamId);
  const heard = speech.playedChars(streamId);
  speech.cancel(streamId);
  if (r) {
    r.cutAt = heard;
    markCut(r, heard);
  }
  try {
    await api.stream.interrupt({ roomId, streamId, playedChars: heard });
  } catch (err) {
    setError(plainError(err, "interrupting"));
  }
  updateControls();
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void send();
});

async function send(): Promise<void> {
  if (soundOn) voice?.audio(); // inside the click: browsers let audio start only after a gesture
  const input = $<HTMLInputElement>("message");
  const content = input.value.trim();
  if (!api || !roomId || !content) return;
  setError("");
  // Barge-in: what was actually heard of the reply is stored, not all that was delivered.
  if (speech.isSpeaking() || activeStream) await interrupt();
  const { el } = bubble("user", content);
  el.dataset.state = "sending";
  input.value = "";
  try {
    await api.stream.sendMessage({ roomId, content, clientMessageId: crypto.randomUUID() });
    el.dataset.state = "sent";
  } catch (err) {
    el.dataset.state = "failed";
    tag(el, "not sent", "failed");
    input.value = content;
    setError(plainError(err, "sending your message"));
  }
}

$("message").addEventListener("input", () => {
  // Typing while the agent speaks interrupts it, as speaking over someone would.
  if ($<HTMLInputElement>("message").value.trim() && speech.isSpeaking()) void interrupt();
});

$("interrupt").addEventListener("click", () => void interrupt());

$("pause").addEventListener("click", async () => {
  if (!api || !roomId) return;
  try {
    if (roomStatus === RoomStatus.PAUSED) {
      roomStatus = (await api.stream.resumeStream({ roomId })).status;
      speech.resume();
    } else {
      roomStatus = (await api.stream.pauseStream({ roomId })).status;
      speech.pause();
    }
  } catch (err) {
    setError(plainError(err, roomStatus === RoomStatus.PAUSED ? "resuming" : "pausing"));
  }
  updateControls();
});

$("sound").addEventListener("click", () => {
  soundOn = !soundOn;
  localStorage.setItem("arconv.sound", soundOn ? "on" : "off");
  if (!soundOn) speechSynthesis?.cancel();
  updateControls();
});

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $<HTMLTextAreaElement>("token").value.trim();
  if (token) void signIn(token);
});

void arSupported().then((ok) => {
  const b = $<HTMLButtonElement>("enter-ar");
  b.hidden = !ok;
  b.addEventListener("click", () => {
    enterAr(view, $("overlay"), () => document.body.classList.remove("in-ar")).then(
      () => document.body.classList.add("in-ar"),
      (err: unknown) => setError(`AR could not start: ${String((err as Error).message ?? err)}.`),
    );
  });
});

$("edge").textContent = edge;
setConnection("offline");
updateControls();
const initial = param("token") ?? sessionStorage.getItem("arconv.token");
if (location.hash.includes("token=")) {
  // The token leaves the address bar (and the history); it is kept for this tab only.
  const rest = new URLSearchParams(location.hash.slice(1));
  rest.delete("token");
  history.replaceState(null, "", location.pathname + location.search + (rest.size ? `#${rest}` : ""));
}
if (initial) void signIn(initial);
else showSignIn("");
