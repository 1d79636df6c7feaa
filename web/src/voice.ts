// The mesh's own voice: VoiceService.Synthesize audio played through Web Audio, with the viseme
// keys and word marks on the audio's clock driving the mouth and the played-characters count.
//
// The bearer of Synthesize is a provider token (TokenService.IssueProviderToken for the room),
// never the user's JWT; it is refreshed at 80% of its life (`refresh_after`).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AudioFormat, VoiceService } from "../gen/arconv/voice/v1/voice_service_pb";
import type { Api } from "./api";
import { SpeechUnavailable, type SpeechEngine, type SpeechProgress, type Utterance, type VisemeKey } from "./speech";

const OPERATIONS = ["tts.synthesize", "tts.viseme_stream"];
const LEAD_S = 0.12; // audio starts this long after its first chunk, so the next one is there in time

/** A provider token for one room, fetched on first use and renewed at 80% of its life. */
export class ProviderTokens {
  private token = "";
  private renewAt = 0;
  private pending: Promise<string> | undefined;

  constructor(
    private readonly api: Api,
    private readonly roomId: string,
  ) {}

  async get(): Promise<string> {
    if (this.token && Date.now() < this.renewAt) return this.token;
    this.pending ??= this.fetch().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async fetch(): Promise<string> {
    const issue = () => this.api.tokens.issueProviderToken({ roomId: this.roomId, operations: OPERATIONS });
    // Renewal exchanges the old token for a new one; a token that can no longer be exchanged
    // (revoked, expired) is replaced by a newly issued one.
    const res = this.token
      ? ((await this.api.tokens.refreshProviderToken({ token: this.token }).catch(() => undefined))?.token ??
        (await issue()))
      : await issue();
    const now = Date.now();
    const expires = res.expireTime ? timestampDate(res.expireTime).getTime() : now + 60_000;
    const refresh = res.refreshAfter ? timestampDate(res.refreshAfter).getTime() : 0;
    this.token = res.token;
    this.renewAt = refresh > now ? refresh : now + 0.8 * (expires - now);
    return this.token;
  }
}

export class VoiceEngine implements SpeechEngine {
  readonly kind = "voice" as const;
  private readonly client: Client<typeof VoiceService>;
  private ctx: AudioContext | undefined;
  private abort: AbortController | undefined;
  private sources: AudioBufferSourceNode[] = [];
  private finish: (() => void) | undefined;

  constructor(
    edge: string,
    private readonly tokens: ProviderTokens,
  ) {
    const bearer: Interceptor = (next) => async (req) => {
      req.header.set("authorization", `Bearer ${await this.tokens.get()}`);
      return next(req);
    };
    this.client = createClient(VoiceService, createGrpcWebTransport({ baseUrl: edge, interceptors: [bearer] }));
  }

  /** The audio context, created (or resumed) inside a user gesture so the browser lets it play. */
  audio(): AudioContext {
    this.ctx ??= new AudioContext();
    if (this.ctx.state === "suspended") void this.ctx.resume();
    return this.ctx;
  }

  async speak(u: Utterance, progress: (p: SpeechProgress) => void): Promise<void> {
    const ctx = this.audio();
    const abort = new AbortController();
    this.abort = abort;
    const visemes: VisemeKey[] = [];
    const words: { end: number; startMs: number }[] = [];
    let rate = 24000;
    let t0 = -1;
    let durationMs = -1;
    let timer = 0;
    let started = false;
    const now = (): number => (t0 < 0 ? 0 : Math.max(0, (ctx.currentTime - t0) * 1000));
    const chars = (t: number): number => {
      let c = 0;
      for (const w of words) if (w.startMs <= t) c = w.end;
      return c;
    };
    const done = new Promise<void>((resolve) => {
      this.finish = resolve;
    });
    try {
      for await (const res of this.client.synthesize(
        { text: u.text, tone: u.tone, format: AudioFormat.PCM, visemes: true },
        { signal: abort.signal },
      )) {
        const ev = res.event;
        if (ev.case === "header") {
          rate = ev.value.sampleRate || rate;
        } else if (ev.case === "viseme") {
          visemes.push({ timeMs: ev.value.timeMs, name: ev.value.name, weight: ev.value.weight });
        } else if (ev.case === "word") {
          words.push({ end: ev.value.charOffset + [...ev.value.text].length, startMs: ev.value.startMs });
        } else if (ev.case === "audio") {
          if (t0 < 0) {
            t0 = ctx.currentTime + LEAD_S;
            started = true;
            timer = window.setInterval(() => {
              const t = now();
              progress({ timeMs: t, chars: durationMs >= 0 && t >= durationMs ? u.text.length : chars(t), visemes });
              if (durationMs >= 0 && t >= durationMs) this.finish?.();
            }, 16);
          }
          this.play(ctx, ev.value.data, rate, t0 + ev.value.startMs / 1000);
        } else if (ev.case === "summary") {
          durationMs = ev.value.durationMs;
        }
      }
      if (!started) return;
      if (durationMs < 0) durationMs = now(); // ended without a summary: keep what was played
      await done;
    } catch (err) {
      if (abort.signal.aborted) return;
      if (!started) throw new SpeechUnavailable(`voice service: ${(err as Error).message}`);
      console.warn(`voice: the audio stopped early: ${(err as Error).message}`);
    } finally {
      window.clearInterval(timer);
      this.stopSources();
      if (this.abort === abort) this.abort = undefined;
      this.finish = undefined;
    }
  }

  stop(): void {
    this.abort?.abort();
    this.stopSources();
    this.finish?.();
  }

  pause(): void {
    void this.ctx?.suspend();
  }

  resume(): void {
    void this.ctx?.resume();
  }

  private play(ctx: AudioContext, pcm: Uint8Array, rate: number, at: number): void {
    const n = pcm.length >> 1;
    if (n === 0) return;
    const view = new DataView(pcm.buffer, pcm.byteOffset, n * 2);
    const buf = ctx.createBuffer(1, n, rate);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < n; i++) ch[i] = view.getInt16(i * 2, true) / 32768;
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    src.start(Math.max(at, ctx.currentTime));
    this.sources.push(src);
    src.onended = () => {
      this.sources = this.sources.filter((s) => s !== src);
    };
  }

  private stopSources(): void {
    for (const s of this.sources) {
      try {
        s.stop();
      } catch {
        // already stopped
      }
    }
    this.sources = [];
  }
}
