// The page check of `weft ui` in headless Chromium (Debian's, driven by
// playwright-core; no browser download). Run by tests/tests/ui_page.rs:
//
//   NODE_PATH=/var/cache/weft/ui-node/node_modules node check.cjs SPEC.json
//
// SPEC: { url, profile, screenshot, dropped: {from, to, policy},
//         allowed: {from, to}, matrix: {pods, port, protocol} }
// Asserts what a person would look for on the page, then prints one JSON
// line {"matrix": [[from, to, state, decided_by], ...], "rows": {...}} for
// the Rust test to compare with the probed truth table.
"use strict";

const fs = require("fs");
const { chromium } = require("playwright-core");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const T = 15000;
const sel = (v) => JSON.stringify(v); // a quoted attribute value

function check(ok, what) {
  if (!ok) throw new Error(`page check failed: ${what}`);
}

async function rows(page) {
  return page.$$eval("#flows tbody tr", (trs) =>
    trs.map((tr) => ({
      verdict: tr.dataset.verdict,
      from: tr.dataset.from,
      to: tr.dataset.to,
      why: tr.querySelector(".why").textContent,
    })),
  );
}

// Waits for the next poll after a filter change, so the table is the
// filtered one.
async function repolled(page) {
  const n = Number(await page.evaluate(() => document.body.dataset.polled || 0));
  await page.waitForFunction((k) => Number(document.body.dataset.polled || 0) >= k + 2, n, { timeout: T });
}

async function main() {
  const ctx = await chromium.launchPersistentContext(spec.profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 800 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const out = {};
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(spec.url, { timeout: T });
    check((await page.title()).startsWith("weft"), "the page loads with its title");

    // the test's denied connection, DROPPED and naming the policy
    const d = spec.dropped;
    const dropped = `#flows tbody tr[data-verdict="DROPPED"][data-from=${sel(d.from)}][data-to=${sel(d.to)}]`;
    await page.waitForSelector(dropped, { timeout: T });
    const why = await page.$eval(`${dropped} .why`, (td) => td.textContent);
    check(why.includes(d.policy), `the dropped flow names ${d.policy}: ${why}`);
    out.dropped_why = why;
    const a = spec.allowed;
    await page.waitForSelector(
      `#flows tbody tr[data-verdict="FORWARDED"][data-from=${sel(a.from)}][data-to=${sel(a.to)}]`,
      { timeout: T },
    );

    // the service map has both edges, coloured by verdict
    await page.waitForSelector(
      `#map g.edge[data-from=${sel(d.from)}][data-to=${sel(d.to)}][data-verdict="DROPPED"]`, { timeout: T });
    await page.waitForSelector(
      `#map g.edge[data-from=${sel(a.from)}][data-to=${sel(a.to)}][data-verdict="FORWARDED"]`, { timeout: T });

    // filters narrow the table: verdict, then a pod
    const all = await rows(page);
    out.unfiltered = all.length;
    await page.selectOption('#filters select[name="verdict"]', "DROPPED");
    await repolled(page);
    const onlyDropped = await rows(page);
    check(onlyDropped.length > 0 && onlyDropped.every((r) => r.verdict === "DROPPED"),
      `verdict=DROPPED shows only drops: ${JSON.stringify(onlyDropped.slice(0, 5))}`);
    check(onlyDropped.length < all.length, `verdict=DROPPED narrows ${all.length} rows (to ${onlyDropped.length})`);
    await page.selectOption('#filters select[name="verdict"]', "");
    // (to_pod: the node that judged the drop names its own pod)
    await page.fill('#filters input[name="to_pod"]', d.to);
    await repolled(page);
    const toD = await rows(page);
    check(toD.length > 0 && toD.every((r) => r.to === d.to),
      `to_pod=${d.to} shows only flows to it: ${JSON.stringify(toD.slice(0, 5))}`);
    check(toD.length < all.length, `to_pod narrows ${all.length} rows (to ${toD.length})`);
    out.filtered = { dropped: onlyDropped.length, to_pod: toD.length };
    await page.fill('#filters input[name="to_pod"]', "");
    await repolled(page);

    // the matrix of the chosen pods
    const m = spec.matrix;
    await page.waitForSelector("#pod-picker input", { timeout: T });
    await page.$$eval("#pod-picker input", (boxes, want) => {
      for (const b of boxes) b.checked = want.includes(b.value);
    }, m.pods);
    await page.fill('#matrix-form input[name="port"]', String(m.port));
    await page.selectOption('#matrix-form select[name="protocol"]', m.protocol);
    await page.click("#compute");
    await page.waitForSelector('#matrix[data-ready="true"]', { timeout: T });
    out.matrix = await page.$$eval("#matrix td", (tds) =>
      tds.map((td) => [td.dataset.from, td.dataset.to, td.dataset.state, td.dataset.decidedBy]));
    check(out.matrix.length === m.pods.length * m.pods.length,
      `a ${m.pods.length}x${m.pods.length} matrix: ${out.matrix.length} cells`);
    // hovering names the deciding policy: the cell's tooltip
    const denied = out.matrix.find((c) => c[2] === "denied");
    if (denied) {
      const title = await page.$eval(
        `#matrix td[data-from=${sel(denied[0])}][data-to=${sel(denied[1])}]`, (td) => td.title);
      check(title.includes(d.policy), `a denied cell's tooltip names ${d.policy}: ${title}`);
    }
    check(errors.length === 0, `no script errors: ${errors.join("; ")}`);
    await page.screenshot({ path: spec.screenshot, fullPage: true });
  } finally {
    await ctx.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
