// Drives the reference client in headless Chromium (Debian's, through playwright-core) through a
// scenario and prints what it saw as JSON on stdout; tests/edge/test_browser.py asserts on it.
//
// Usage: node e2e/run.mjs SCENARIO URL USER_DATA_DIR SHOTS_DIR
//   bad-token      the page with a token the mesh refuses: the sign-in box and its message
//   conversation   sign in, avatar, a greeting spoken (visemes, markers), an interrupt, a dropped
//                  connection resumed
//   voice          a reply spoken by the mesh's VoiceService (Web Audio, visemes and words on the
//                  audio clock), then one interrupted part-way
//   screenshot     a README picture mid-reply (SHOTS_DIR/client.png)
// Pages read the client's debug state from `window.arconv` (read-only snapshots).
import net from "node:net";
import { chromium } from "playwright-core";

const [scenario, pageUrl, userDataDir, shots] = process.argv.slice(2);
if (!scenario || !pageUrl || !userDataDir || !shots) {
  console.error("usage: node e2e/run.mjs SCENARIO URL USER_DATA_DIR SHOTS_DIR");
  process.exit(2);
}

/**
 * A TCP relay between the page and the edge, so the scenario can drop the network for real:
 * `drop()` cuts every open connection and refuses new ones until `restore()`.
 */
async function relay(target) {
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => { client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    drop() { down = true; for (const s of sockets) s.destroy(); },
    restore() { down = false; },
    close() { for (const s of sockets) s.destroy(); server.close(); },
  };
}

// The page reaches the edge through the relay (the `edge` parameter, in the query or fragment).
const parsed = new URL(pageUrl);
const query = parsed.searchParams;
const fragment = new URLSearchParams(parsed.hash.slice(1));
const edgeParams = query.has("edge") ? query : fragment;
const net_ = await relay(new URL(edgeParams.get("edge")));
edgeParams.set("edge", net_.url);
parsed.hash = fragment.toString();
const url = parsed.toString();
const TIMEOUT_MS = Number(process.env.ARCONV_BROWSER_TIMEOUT_MS ?? 90000);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 760 },
  args: [
    "--headless",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const log = [];
const requests = [];
const out = { scenario, steps: [], console: log, requests };
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(TIMEOUT_MS);
page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
page.on("request", (r) => {
  if (r.method() === "POST") {
    requests.push({ url: r.url().replace(net_.url, "EDGE"), type: r.headers()["content-type"] });
  }
});

const debug = () => page.evaluate(() => JSON.parse(JSON.stringify(window.arconv)));
let shotNo = 0;
async function shot(name) {
  const path = `${shots}/${String(++shotNo).padStart(2, "0")}-${name}.png`;
  await page.screenshot({ path });
  out.steps.push(name);
  return path;
}

/** The avatar canvas as 48x48 grey levels, and how many pixels differ from the background. */
function canvasSample() {
  return page.evaluate(() => {
    const src = document.getElementById("avatar");
    const c = document.createElement("canvas");
    c.width = c.height = 48;
    const g = c.getContext("2d");
    // The mouth is in the face: sample the face's square, where the page says it is.
    const w = src.width, h = src.height;
    const f = window.arconv.faceRect ?? { x: w * 0.35, y: h * 0.05, w: w * 0.3, h: h * 0.45 };
    g.drawImage(src, f.x, f.y, f.w, f.h, 0, 0, 48, 48);
    const d = g.getImageData(0, 0, 48, 48).data;
    const grey = [];
    let opaque = 0;
    for (let i = 0; i < d.length; i += 4) {
      grey.push(Math.round((d[i] + d[i + 1] + d[i + 2]) / 3));
      if (d[i + 3] > 0) opaque++;
    }
    return { grey, opaque, width: w, height: h, face: f };
  });
}
const diff = (a, b) => a.grey.reduce((n, v, i) => n + (Math.abs(v - b.grey[i]) > 6 ? 1 : 0), 0);

/** Records debug snapshots every 40 ms in the page until stopRecording(). */
const startRecording = () =>
  page.evaluate(() => {
    window.__rec = [];
    window.__recTimer = setInterval(() => {
      const s = window.arconv;
      window.__rec.push({ t: Math.round(performance.now()), clip: s.clip, morphs: s.morphs,
        audioMs: s.audioMs, speaking: s.speaking, playedChars: s.playedChars, engine: s.engine });
    }, 40);
  });
const stopRecording = () =>
  page.evaluate(() => {
    clearInterval(window.__recTimer);
    return window.__rec;
  });
const visemeSum = (m) =>
  Object.entries(m).filter(([k]) => k.startsWith("viseme_")).reduce((s, [, w]) => s + w, 0);

function dominant(morphs) {
  const v = Object.entries(morphs).filter(([k]) => k.startsWith("viseme_")).sort((a, b) => b[1] - a[1]);
  return v.length ? v[0][0] : "";
}

async function signedIn() {
  await page.goto(url);
  await page.waitForSelector("#agents[data-state=ready] button");
  await page.waitForSelector("#room[data-state=subscribed]");
  await page.waitForSelector("#stage[data-avatar=ready]");
  await page.waitForTimeout(400); // a few frames after the model appears
}

async function say(text) {
  await page.fill("#message", text);
  await page.click("#send");
}

const replyCount = () => page.$$eval(".msg.agent", (els) => els.length);
async function waitReplyEnded(n) {
  await page.waitForFunction(
    (n) => {
      const els = document.querySelectorAll(".msg.agent");
      return els.length >= n && els[n - 1].dataset.state && els[n - 1].dataset.state !== "streaming";
    },
    n,
  );
}
const lastReply = () =>
  page.$$eval(".msg.agent", (els) => {
    const el = els[els.length - 1];
    return { streamId: el.dataset.streamId, state: el.dataset.state, cutAt: el.dataset.cutAt,
      text: el.querySelector(".body").textContent, chips: [...el.querySelectorAll(".chip")].map((c) => c.textContent) };
  });

try {
  if (scenario === "bad-token") {
    await page.goto(url);
    await page.waitForSelector("#signin:not([hidden]) #signin-error:not([hidden])");
    out.signinError = await page.textContent("#signin-error");
    await shot("bad-token");
  } else if (scenario === "screenshot") {
    await signedIn();
    await say("Hello! Tell me about yourself.");
    await page.waitForFunction(() => {
      const s = window.arconv;
      return s.speaking && s.playedChars > 30 && Object.keys(s.morphs).some((k) => k.startsWith("viseme_"));
    });
    await page.screenshot({ path: `${shots}/client.png` });
  } else if (scenario === "voice") {
    await signedIn();
    await startRecording();
    await say("Hello!");
    await page.waitForFunction(() => window.arconv.speaking && window.arconv.engine === "voice");
    await page.waitForFunction(() => Object.keys(window.arconv.morphs).some((k) => k.startsWith("viseme_")));
    await shot("voice-speaking");
    await waitReplyEnded(1);
    await page.waitForFunction(() => !window.arconv.speaking);
    await page.waitForTimeout(500);
    const rec = await stopRecording();
    const speaking = rec.filter((r) => r.speaking);
    out.afterSpeech = await debug();
    out.spoken = {
      reply: await lastReply(),
      engines: [...new Set(speaking.map((r) => r.engine))],
      samples: speaking.length,
      dominantVisemes: [...new Set(speaking.map((r) => dominant(r.morphs)).filter(Boolean))],
      visemeChanges: speaking.filter((r, i) => i > 0 && dominant(r.morphs) !== dominant(speaking[i - 1].morphs)).length,
      maxAudioMs: Math.max(0, ...speaking.map((r) => r.audioMs)),
      audioMsRising: speaking.length > 2 && speaking.at(-1).audioMs > speaking[0].audioMs,
      maxPlayed: Math.max(0, ...speaking.map((r) => r.playedChars)),
    };
    const before = await replyCount();
    await say("Please tell me a story.");
    await page.waitForFunction(
      (n) => document.querySelectorAll(".msg.agent").length > n && window.arconv.engine === "voice" &&
        window.arconv.playedChars >= 12 && window.arconv.activeStream !== "",
      before,
    );
    await page.click("#interrupt");
    await waitReplyEnded(before + 1);
    out.interrupted = { reply: await lastReply(), debug: await debug() };
    await shot("voice-interrupted");
    out.error = await page.textContent("#error");
  } else if (scenario === "conversation") {
    await signedIn();
    out.agents = await page.$$eval("#agents button", (bs) =>
      bs.map((b) => ({ id: b.dataset.agentId, name: b.querySelector(".name").textContent,
        status: b.querySelector(".avatar-status").textContent })));
    out.initial = await debug();
    await shot("avatar");
    const rest = await canvasSample();
    out.canvas = { opaque: rest.opaque, width: rest.width, height: rest.height, face: rest.face,
      distinct: new Set(rest.grey).size };

    // 1. A greeting: visemes move while it is spoken, the mouth changes the pixels, then rests.
    await startRecording();
    await say("Hello Nova, wave at me!");
    await page.waitForFunction(() => {
      const m = window.arconv.morphs;
      return Object.entries(m).some(([k, w]) => k.startsWith("viseme_") && k !== "viseme_PP" && w > 0.4);
    });
    const open = await canvasSample();
    await shot("speaking");
    out.mouthPixelsChanged = diff(rest, open);
    await waitReplyEnded(1);
    await page.waitForFunction(() => !window.arconv.speaking);
    await page.waitForTimeout(500);
    const rec = await stopRecording();
    out.afterSpeech = await debug();
    await shot("after-reply");
    // Once the expressions have decayed too, the face is back to where it started.
    await page.waitForFunction(() => Object.keys(window.arconv.morphs).length === 0);
    const closed = await canvasSample();
    out.restPixelsChanged = diff(rest, closed);
    const speaking = rec.filter((r) => r.speaking);
    out.greeting = {
      reply: await lastReply(),
      engine: speaking[0]?.engine,
      samples: speaking.length,
      // The mouth shape that leads at each sample: it changes as the sentence goes on.
      dominantVisemes: [...new Set(speaking.map((r) => dominant(r.morphs)).filter(Boolean))],
      maxVisemeSum: Math.max(0, ...speaking.map((r) => visemeSum(r.morphs))),
      fps: speaking.length > 1 ? Math.round((1000 * (speaking.at(-1).frames - speaking[0].frames)) / (speaking.at(-1).t - speaking[0].t)) : 0,
      audioMsRising: speaking.length > 2 && speaking.at(-1).audioMs > speaking[0].audioMs,
      clips: [...new Set(rec.map((r) => r.clip))],
      restVisemeSum: visemeSum(out.afterSpeech.morphs),
    };

    // 2. Interrupt part-way: the page tells the mesh how much was heard.
    const before = await replyCount();
    await say("Please tell me a story.");
    await page.waitForFunction(
      (n) => document.querySelectorAll(".msg.agent").length > n && window.arconv.playedChars >= 12 && window.arconv.activeStream !== "",
      before,
    );
    await page.click("#interrupt");
    await waitReplyEnded(before + 1);
    out.interrupted = { reply: await lastReply(), debug: await debug() };
    await shot("interrupted");

    // 3. The network drops mid-reply; the page reconnects after the last event it saw.
    const n3 = await replyCount();
    await say("What can you do?");
    await page.waitForFunction((n) => document.querySelectorAll(".msg.agent").length > n, n3);
    const cutAt = (await debug()).lastEventId;
    net_.drop();
    await page.waitForFunction(() => window.arconv.connection === "reconnecting");
    await shot("reconnecting");
    await page.waitForTimeout(1500);
    net_.restore();
    await page.waitForFunction(() => window.arconv.connection === "live");
    await waitReplyEnded(n3 + 1);
    await page.waitForFunction(() => !window.arconv.speaking);
    out.dropped = { lastEventIdAtDrop: cutAt, reply: await lastReply(), debug: await debug() };
    await shot("resumed");
    out.transcript = await page.$$eval(".msg", (els) =>
      els.map((el) => ({ kind: el.classList.contains("user") ? "user" : "agent", streamId: el.dataset.streamId ?? "",
        text: el.querySelector(".body").textContent })));
    out.error = await page.textContent("#error");
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
} catch (err) {
  await page.screenshot({ path: `${shots}/failure.png` }).catch(() => {});
  process.stderr.write(`${err.stack ?? err}\nsteps: ${out.steps.join(", ")}\nconsole:\n${log.join("\n")}\n`);
  process.exitCode = 1;
} finally {
  await context.close();
  net_.close();
}
