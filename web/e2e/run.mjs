// Drives the page in headless Chromium (Debian's, through playwright-core): lists the agents,
// opens a room with one, sends a message, waits for the streamed reply to end, and prints what
// the page shows as JSON on stdout. Usage: node e2e/run.mjs URL USER_DATA_DIR MESSAGE [AGENT]
import { chromium } from "playwright-core";

const [url, userDataDir, message, agentId = "nova"] = process.argv.slice(2);
if (!url || !userDataDir || !message) {
  console.error("usage: node e2e/run.mjs URL USER_DATA_DIR MESSAGE [AGENT]");
  process.exit(2);
}
const TIMEOUT_MS = Number(process.env.ARCONV_BROWSER_TIMEOUT_MS ?? 60000);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const console_ = [];
const requests = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("console", (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => console_.push(`pageerror: ${e.message}`));
  page.on("request", (r) => {
    if (r.method() === "POST") requests.push({ url: r.url(), type: r.headers()["content-type"] });
  });
  await page.goto(url);
  await page.waitForSelector("#agents[data-state=ready] button");
  const agents = await page.$$eval("#agents button", (bs) =>
    bs.map((b) => ({ id: b.dataset.agentId, name: b.textContent })),
  );
  await page.click(`#agents button[data-agent-id="${agentId}"]`);
  await page.waitForSelector("#room[data-state=subscribed]");
  await page.fill("#message", message);
  await page.click("#send");
  await page.waitForFunction(
    () => document.getElementById("stream-status")?.textContent?.startsWith("ended"),
  );
  if (process.env.ARCONV_BROWSER_SCREENSHOT) {
    await page.screenshot({ path: process.env.ARCONV_BROWSER_SCREENSHOT, fullPage: true });
  }
  const text = (id) => page.$eval(`#${id}`, (el) => el.textContent);
  const result = {
    agents,
    roomId: await text("room-id"),
    roomStatus: await text("room-status"),
    subscription: await text("subscription"),
    reply: await text("reply"),
    markers: await page.$$eval("#markers li", (lis) => lis.map((li) => li.textContent)),
    streamStatus: await text("stream-status"),
    streamId: await page.$eval("#stream-status", (el) => el.dataset.streamId),
    chunks: Number(await page.$eval("#stream-status", (el) => el.dataset.chunks)),
    error: await text("error"),
    userAgent: await page.evaluate(() => navigator.userAgent),
    requests,
    console: console_,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (err) {
  process.stderr.write(`${err.stack ?? err}\nconsole:\n${console_.join("\n")}\n`);
  process.exitCode = 1;
} finally {
  await context.close();
}
