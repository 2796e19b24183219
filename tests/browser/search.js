// Browser test for the magiclens web page (run by tests/t_serve_browser.sh):
// headless Chromium through playwright-core uploads an image, types an
// instruction, sees results with scores, pages, clicks a result to search
// again, runs a text-only query and checks that errors show in plain words.
// usage: node search.js URL IMAGE SCREENSHOT_DIR
"use strict";
const path = require("path");
let chromium;
try {
  ({ chromium } = require(path.join(__dirname, "node_modules", "playwright-core")));
} catch (e) {
  console.error("FAIL: playwright-core is not installed in tests/browser/node_modules " +
                "(run scripts/install-deps.sh)");
  process.exit(1);
}
const [url, image, shots] = process.argv.slice(2);

function check(cond, what) {
  console.log((cond ? "ok   " : "FAIL ") + what);
  if (!cond) process.exitCode = 1;
}

async function searchDone(page, action) {
  const resp = page.waitForResponse((r) => r.url().endsWith("/api/search"), { timeout: 30000 });
  await action();
  const r = await resp;
  await page.waitForFunction(() => !document.getElementById("go").disabled);
  return r;
}

async function run() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => /images indexed/.test(document.getElementById("status").textContent));
  check(true, "page loaded: " + await page.textContent("#status"));

  // Nothing to search for: a plain-words message, no request.
  await page.click("#go");
  check((await page.textContent("#error")).startsWith("Pick or drop an image"), "empty query shows an error");

  // Upload an image and type an instruction.
  await page.setInputFiles("#file", image);
  await page.fill("#text", "the same object, seen from inside");
  await page.selectOption("#k", "12");
  let r = await searchDone(page, () => page.click("#go"));
  check(r.status() === 200, "image + instruction search: HTTP 200");
  let cards = await page.$$(".card");
  check(cards.length === 12, "12 results shown (" + cards.length + ")");
  const score = await page.textContent(".card .score");
  check(/^#1 · score -?\d\.\d{4}$/.test(score), "result shows rank and score: " + score);
  await page.waitForFunction(() => [...document.querySelectorAll(".card img")].every((i) => i.complete && i.naturalWidth > 0));
  check(true, "thumbnails loaded");
  await page.screenshot({ path: path.join(shots, "results.png"), fullPage: true });

  // Next page.
  r = await searchDone(page, () => page.click("#next"));
  check(r.status() === 200 && /^Results 13–/.test(await page.textContent("#summary")), "next page: " + await page.textContent("#summary"));

  // Click a result: it becomes the query image (searched by id).
  const id = await page.getAttribute(".card", "data-id");
  r = await searchDone(page, () => page.click(".card"));
  const sent = JSON.parse(r.request().postData());
  check(r.status() === 200 && sent.image_id === Number(id) && sent.offset === 0, "clicking result " + id + " searches with image_id");
  check((await page.getAttribute("#preview", "src")) === "/api/thumbs/" + id, "clicked image shown as the query");
  const ids = await page.$$eval(".card", (cs) => cs.map((c) => c.dataset.id));
  check(ids.length > 0 && !ids.includes(id), "the query image itself is left out of its results");
  await page.screenshot({ path: path.join(shots, "clicked.png"), fullPage: true });

  // Text only.
  await page.click("#clear");
  await page.fill("#text", "a photo of a red object");
  r = await searchDone(page, () => page.click("#go"));
  check(r.status() === 200 && (await page.$$(".card")).length > 0, "text-only search shows results");

  // Image only, then an error from the server shown in words (an over-long instruction).
  await page.setInputFiles("#file", image);
  await page.fill("#text", "");
  r = await searchDone(page, () => page.click("#go"));
  check(r.status() === 200 && (await page.$$(".card")).length > 0, "image-only search shows results");
  await page.fill("#text", "cat ".repeat(100));
  r = await searchDone(page, () => page.click("#go"));
  const msg = await page.textContent("#error");
  check(r.status() === 400 && (await page.isVisible("#error")) && /token|long/i.test(msg), "server error shown in words: " + msg);
  await page.screenshot({ path: path.join(shots, "error.png"), fullPage: true });
  check(errors.length === 0, "no JavaScript errors " + JSON.stringify(errors));
  await browser.close();
}

run().catch((e) => { console.error("FAIL: " + (e && e.stack || e)); process.exit(1); });
