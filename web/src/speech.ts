// The TTS controller: speaks a reply sentence by sentence and keeps the speech clock that lip-sync,
// gestures and interruptions read.
//
// Each sentence arrives as a SpeechCue (text, rate, pitch, viseme timeline, duration). An engine
// speaks it and reports where it is on the sentence's own clock; the controller turns that into
// viseme weights and into the number of the reply's characters already spoken. Engines:
// - `voice`: the mesh's VoiceService (audio + viseme keys on the audio clock), when available;
// - `browser`: the browser's speechSynthesis, its boundary events re-anchoring the cue timeline;
// - `timeline`: silent, the cue timeline on the wall clock (no speech engine, or sound off).

export interface VisemeKey {
  timeMs: number;
  name: string;
  weight: number;
}

/** One sentence of a reply to speak. Offsets count characters of the reply's text. */
export interface Utterance {
  streamId: string;
  text: string;
  textOffset: number;
  tone: string;
  rate: number;
  pitch: number;
  visemes: VisemeKey[];
  durationMs: number;
}

/** Where an engine is within the utterance it speaks. */
export interface SpeechProgress {
  /** Milliseconds on the utterance's timeline (the cue's, or the audio's own clock). */
  timeMs: number;
  /** Characters of the utterance already spoken (word granularity). */
  chars: number;
  /** Viseme keys on this engine's clock; the cue's when the engine has none of its own. */
  visemes?: VisemeKey[];
}

/** Speaks one utterance at a time. `speak` resolves when it is done or stopped. */
export interface SpeechEngine {
  readonly kind: "voice" | "browser" | "timeline";
  speak(u: Utterance, progress: (p: SpeechProgress) => void): Promise<void>;
  stop(): void;
  pause(): void;
  resume(): void;
}

const RAMP_MS = 60;

/** Viseme weights at `t` ms of a timeline: each key eases in over RAMP_MS from the one before. */
export function visemesAt(keys: readonly VisemeKey[], t: number): Map<string, number> {
  const out = new Map<string, number>();
  let i = -1;
  for (let k = 0; k < keys.length && keys[k].timeMs <= t; k++) i = k;
  if (i < 0) return out;
  const cur = keys[i];
  const alpha = Math.min(1, (t - cur.timeMs) / RAMP_MS);
  const add = (name: string, w: number): void => {
    if (name !== "sil" && w > 0) out.set(name, (out.get(name) ?? 0) + w);
  };
  add(cur.name, cur.weight * alpha);
  if (i > 0 && alpha < 1) add(keys[i - 1].name, keys[i - 1].weight * (1 - alpha));
  return out;
}

/** Characters spoken by time `t` of `durationMs`, snapped to the end of the word being spoken. */
export function charsAt(text: string, t: number, durationMs: number): number {
  if (durationMs <= 0 || t >= durationMs) return text.length;
  if (t <= 0) return 0;
  const raw = Math.floor((text.length * t) / durationMs);
  const space = text.slice(raw).search(/\s/);
  return space < 0 ? text.length : raw + space;
}

/** Silent: the cue's own timeline on the wall clock. */
export class TimelineEngine implements SpeechEngine {
  readonly kind = "timeline" as const;
  private timer = 0;
  private finish: (() => void) | undefined;
  private startedAt = 0;
  private pausedAt = 0;

  speak(u: Utterance, progress: (p: SpeechProgress) => void): Promise<void> {
    this.stop();
    return new Promise((resolve) => {
      this.startedAt = performance.now();
      this.pausedAt = 0;
      this.finish = resolve;
      const tick = (): void => {
        if (this.pausedAt) return;
        const t = performance.now() - this.startedAt;
        progress({ timeMs: t, chars: charsAt(u.text, t, u.durationMs) });
        if (t >= u.durationMs) this.stop();
      };
      this.timer = window.setInterval(tick, 16);
      tick();
    });
  }

  stop(): void {
    window.clearInterval(this.timer);
    const finish = this.finish;
    this.finish = undefined;
    finish?.();
  }

  pause(): void {
    if (!this.pausedAt) this.pausedAt = performance.now();
  }

  resume(): void {
    if (!this.pausedAt) return;
    this.startedAt += performance.now() - this.pausedAt;
    this.pausedAt = 0;
  }
}

/**
 * The browser's speechSynthesis. Its audio clock is not visible, so the cue timeline runs on the
 * wall clock from the utterance's `start`, re-anchored at every word `boundary` to where the cue
 * expects that character. Throws `SpeechUnavailable` when the browser has no voice or never
 * starts speaking; the controller then falls back to the timeline engine.
 */
export class BrowserSpeechEngine implements SpeechEngine {
  readonly kind = "browser" as const;
  private current: SpeechSynthesisUtterance | undefined;
  private timer = 0;

  static available(): boolean {
    return "speechSynthesis" in window && speechSynthesis.getVoices().length > 0;
  }

  speak(u: Utterance, progress: (p: SpeechProgress) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const utt = new SpeechSynthesisUtterance(u.text);
      utt.rate = clamp(u.rate || 1, 0.5, 2);
      utt.pitch = clamp(u.pitch || 1, 0.5, 2);
      this.current = utt;
      let anchorWall = 0;
      let anchorT = 0;
      let chars = 0;
      let paused = 0;
      const expected = (c: number): number => (u.durationMs * c) / Math.max(1, u.text.length);
      const tick = (): void => {
        if (!anchorWall || paused || speechSynthesis.paused) return;
        const t = Math.min(u.durationMs, anchorT + (performance.now() - anchorWall));
        progress({ timeMs: t, chars: Math.max(chars, charsAt(u.text, t, u.durationMs)) });
      };
      const done = (): void => {
        window.clearInterval(this.timer);
        this.timer = 0;
        if (this.current === utt) this.current = undefined;
        progress({ timeMs: u.durationMs, chars: u.text.length });
        resolve();
      };
      const noStart = window.setTimeout(() => {
        if (anchorWall) return;
        speechSynthesis.cancel();
        reject(new SpeechUnavailable("the browser did not start speaking"));
      }, 2500);
      utt.onstart = () => {
        window.clearTimeout(noStart);
        anchorWall = performance.now();
        this.timer = window.setInterval(tick, 16);
      };
      utt.onboundary = (ev) => {
        if (ev.name !== "word") return;
        chars = Math.max(chars, ev.charIndex + (ev.charLength || 0));
        anchorT = expected(ev.charIndex);
        anchorWall = performance.now();
      };
      utt.onpause = () => {
        paused = performance.now();
      };
      utt.onresume = () => {
        anchorWall += performance.now() - paused;
        paused = 0;
      };
      utt.onend = () => {
        window.clearTimeout(noStart);
        done();
      };
      utt.onerror = (ev) => {
        window.clearTimeout(noStart);
        if (ev.error === "interrupted" || ev.error === "canceled") done();
        else reject(new SpeechUnavailable(`speech failed: ${ev.error}`));
      };
      speechSynthesis.speak(utt);
    });
  }

  stop(): void {
    if (this.current) speechSynthesis.cancel();
  }

  pause(): void {
    speechSynthesis.pause();
  }

  resume(): void {
    speechSynthesis.resume();
  }
}

export class SpeechUnavailable extends Error {}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

export interface SpeechState {
  speaking: boolean;
  streamId: string;
  /** Characters of the reply's text spoken so far (this stream). */
  playedChars: number;
  /** Position on the current utterance's clock, ms. */
  audioMs: number;
  visemes: Map<string, number>;
  engine: SpeechEngine["kind"];
}

/**
 * Queues a reply's sentences and speaks them in order with the best engine available, keeping the
 * speech clock. A reply that is interrupted or superseded is dropped from the queue at once.
 */
export class SpeechController {
  private queue: Utterance[] = [];
  private running = false;
  private current: Utterance | undefined;
  private progress: SpeechProgress = { timeMs: 0, chars: 0 };
  private spokenByStream = new Map<string, number>();
  private engine: SpeechEngine;
  private readonly silent = new TimelineEngine();
  private paused = false;
  /** Called when a reply's speech starts and when the queue drains. */
  onIdle: () => void = () => {};

  constructor(
    private preferred: () => SpeechEngine | undefined,
    private soundOn: () => boolean,
  ) {
    this.engine = this.silent;
  }

  enqueue(u: Utterance): void {
    this.queue.push(u);
    if (!this.running) void this.run();
  }

  /** Drops a reply: the sentence being spoken stops and the queued ones go. */
  cancel(streamId?: string): void {
    this.queue = this.queue.filter((u) => streamId !== undefined && u.streamId !== streamId);
    if (this.current && (streamId === undefined || this.current.streamId === streamId)) {
      this.engine.stop();
    }
  }

  pause(): void {
    this.paused = true;
    this.engine.pause();
  }

  resume(): void {
    this.paused = false;
    this.engine.resume();
  }

  playedChars(streamId: string): number {
    return this.spokenByStream.get(streamId) ?? 0;
  }

  isSpeaking(streamId?: string): boolean {
    if (!this.current && this.queue.length === 0) return false;
    if (streamId === undefined) return true;
    return this.current?.streamId === streamId || this.queue.some((u) => u.streamId === streamId);
  }

  state(): SpeechState {
    const u = this.current;
    const keys = this.progress.visemes ?? u?.visemes ?? [];
    return {
      speaking: u !== undefined,
      streamId: u?.streamId ?? "",
      playedChars: u ? this.playedChars(u.streamId) : 0,
      audioMs: u ? this.progress.timeMs : 0,
      visemes: u && !this.paused ? visemesAt(keys, this.progress.timeMs) : new Map(),
      engine: this.engine.kind,
    };
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        while (this.paused) await new Promise((r) => setTimeout(r, 100));
        const u = this.queue.shift();
        if (!u) break;
        this.current = u;
        this.progress = { timeMs: 0, chars: 0 };
        this.engine = (this.soundOn() && this.preferred()) || this.silent;
        const onProgress = (p: SpeechProgress): void => {
          if (this.current !== u) return;
          this.progress = p;
          const spoken = u.textOffset + p.chars;
          if (spoken > (this.spokenByStream.get(u.streamId) ?? 0)) {
            this.spokenByStream.set(u.streamId, spoken);
          }
        };
        for (;;) {
          try {
            await this.engine.speak(u, onProgress);
            break;
          } catch (err) {
            if (!(err instanceof SpeechUnavailable)) throw err;
            console.warn(`speech (${this.engine.kind}): ${err.message}; trying the next engine`);
            this.unavailable.add(this.engine.kind);
            this.engine = (this.soundOn() && this.preferred()) || this.silent;
          }
        }
        this.current = undefined;
      }
    } finally {
      this.running = false;
      this.current = undefined;
      this.onIdle();
    }
  }

  /** Engines that failed once; the page stops offering them. */
  readonly unavailable = new Set<SpeechEngine["kind"]>();
}
