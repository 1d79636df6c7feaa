#!/usr/bin/env node
// Renders avatar GLBs in headless Chromium (Debian's, through playwright-core) with three.js and
// @pixiv/three-vrm, the way a web client loads them, and writes PNG frames.
//
// Usage: node tools/render/render.mjs OUT_DIR MODEL.glb [MODEL.glb...]
//
// Serves this folder (page.html, scene.js, node_modules) and the models on a free port of
// 127.0.0.1, opens page.html, and for each model calls window.arconvRender (scene.js). Writes
// OUT_DIR/<model>-<frame>.png (frames: rest, gesture_wave, face_rest, face_aa, face_happy,
// face_blink) and prints one JSON line: {"models": [{"model", "frames": {name: path}, ...}]}
// with what the page found (VRM meta, bones, expressions, clips, morphs) and the pixel
// measurements. Exit status 0 on success, 1 when a page fails, 2 on bad usage.
// CHROMIUM overrides /usr/bin/chromium; WebGL runs on SwiftShader (no GPU needed).
import http from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.glb': 'model/gltf-binary' };
const [outDir, ...models] = process.argv.slice(2);
if (!outDir || !models.length) {
  console.error('usage: node render.mjs OUT_DIR MODEL.glb [MODEL.glb...]');
  process.exit(2);
}

const server = http.createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  let file;
  const m = /^\/models\/(\d+)\.glb$/.exec(path);
  if (m && Number(m[1]) < models.length) {
    file = resolve(models[Number(m[1])]);
  } else {
    file = resolve(HERE, '.' + (path === '/' ? '/page.html' : path));
    if (!file.startsWith(HERE + sep)) file = null;  // nothing outside this folder
  }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--no-first-run', '--disable-sync',
    '--disable-background-networking', '--disable-component-update',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
  ],
});
let status = 0;
const results = [];
try {
  await mkdir(outDir, { recursive: true });
  const page = await browser.newPage();
  page.setDefaultTimeout(Number(process.env.ARCONV_RENDER_TIMEOUT_MS ?? 60000));
  const log = [];
  page.on('console', (msg) => log.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => log.push(`pageerror: ${err.message}`));
  await page.goto(`${origin}/page.html`);
  await page.waitForFunction(() => window.arconvReady === true);
  for (const [i, model] of models.entries()) {
    const name = basename(model, '.glb');
    try {
      const report = await page.evaluate((url) => window.arconvRender(url), `/models/${i}.glb`);
      const frames = {};
      for (const [frame, dataUrl] of Object.entries(report.frames)) {
        const file = join(outDir, `${name}-${frame}.png`);
        await writeFile(file, Buffer.from(dataUrl.split(',', 2)[1], 'base64'));
        frames[frame] = file;
      }
      results.push({ model, ...report, frames, log: log.splice(0) });
    } catch (err) {
      status = 1;
      results.push({ model, error: String(err?.message ?? err), log: log.splice(0) });
    }
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ models: results }));
process.exit(status);
