// Headless-Chromium smoke test of the real ComfyUI web frontend (used by tests/ui/test_workflows_ui.py).
//
// Opens the UI of a running ComfyUI server, loads a UI-format workflow JSON
// (the kind "Save" / workflows/*.json produce) through app.loadGraphData,
// and fails if any node type in it is unknown to the frontend or if the
// "missing nodes" dialog appears.  Optionally checks that a frontend extension
// from the pack's WEB_DIRECTORY ran (--expect-global NAME) and takes a screenshot.
//
// Setup: bash scripts/setup_ui.sh (Debian chromium + npm playwright-core in .cache/ui-smoke, no
// browser download). Run against a server (e.g. tests/integration/comfyui_server.py):
//   PW_DIR=.cache/ui-smoke node tests/ui/ui_smoke.mjs --url http://127.0.0.1:8188 \
//       --workflow path/to/workflow.json [--expect-node TYPE ...] [--expect-global NAME] \
//       [--screenshot out.png] [--dump-prompt prompt.json] [--timeout 60000] [--expect-missing]
// --dump-prompt writes the API-format prompt the frontend builds (app.graphToPrompt().output).
// Every expected node type must be registered in the frontend AND be present in the loaded graph.
// Exit code 0 = pass, 1 = fail, 2 = usage/setup error.  Last stdout line is a JSON summary.
// Env: CHROMIUM (default /usr/bin/chromium), PW_DIR (where node_modules/playwright-core is;
// default: the current directory and its parents).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

function parseArgs(argv) {
  const a = { expectNode: [], timeout: 60000 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = () => argv[++i];
    if (k === "--url") a.url = v();
    else if (k === "--workflow") a.workflow = v();
    else if (k === "--screenshot") a.screenshot = v();
    else if (k === "--expect-node") a.expectNode.push(v());
    else if (k === "--expect-global") a.expectGlobal = v();
    else if (k === "--dump-prompt") a.dumpPrompt = v();
    else if (k === "--timeout") a.timeout = Number(v());
    else if (k === "--expect-missing") a.expectMissing = true; // negative test: a missing node must be reported
    else { console.error(`unknown argument ${k}`); process.exit(2); }
  }
  if (!a.url || !a.workflow) { console.error("need --url and --workflow"); process.exit(2); }
  return a;
}

function loadPlaywright() {
  const bases = [process.env.PW_DIR, process.cwd()].filter(Boolean);
  for (const b of bases) {
    try { return createRequire(path.resolve(b, "noop.js"))("playwright-core"); } catch { /* next */ }
  }
  console.error("playwright-core not found: npm install --prefix DIR playwright-core and set PW_DIR=DIR");
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const { chromium } = loadPlaywright();
const workflow = JSON.parse(fs.readFileSync(args.workflow, "utf8"));
const summary = { url: args.url, workflow: args.workflow, ok: false, missing: [], dialogs: [],
                  pageErrors: [], consoleErrors: [], nodeCount: 0 };
const t0 = Date.now();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(args.timeout);
  page.on("pageerror", (e) => summary.pageErrors.push(String(e).slice(0, 500)));
  page.on("console", (m) => { if (m.type() === "error") summary.consoleErrors.push(m.text().slice(0, 500)); });
  // keep the browser strictly on the local server
  await page.route("**/*", (route) => {
    const u = new URL(route.request().url());
    const local = ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname) || u.protocol === "data:" || u.protocol === "blob:";
    return local ? route.continue() : route.abort();
  });
  // a fresh user profile opens the template browser on first load; mark the tutorial as done
  try {
    await fetch(new URL("/settings/Comfy.TutorialCompleted", args.url), { method: "POST", body: "true" });
  } catch { /* older servers: ignore */ }
  await page.goto(args.url, { waitUntil: "domcontentloaded" });
  // the frontend exposes window.app (ComfyApp) once the graph canvas is set up and node defs are registered
  await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph
      && Object.keys(window.LiteGraph.registered_node_types || {}).length > 10);
  summary.msReady = Date.now() - t0;
  await page.waitForTimeout(1500);          // let the startup workflow restore finish first
  await page.keyboard.press("Escape");      // close any startup dialog

  const result = await page.evaluate(async ({ wf, expectNode, dump }) => {
    const registered = window.LiteGraph.registered_node_types;
    const types = [...new Set((wf.nodes || []).map((n) => n.type))];
    const unknownBefore = types.filter((t) => !registered[t]);
    const notRegistered = expectNode.filter((t) => !registered[t]);
    await window.app.loadGraphData(wf);
    await new Promise((r) => setTimeout(r, 1500));
    const nodes = window.app.graph._nodes || window.app.graph.nodes || [];
    const loadedTypes = nodes.map((n) => n.type);
    const notRendered = expectNode.filter((t) => !loadedTypes.includes(t));
    let prompt = null;
    if (dump) prompt = (await window.app.graphToPrompt()).output;
    return { unknownBefore, notRegistered, notRendered, nodeCount: nodes.length, loadedTypes, prompt };
  }, { wf: workflow, expectNode: args.expectNode, dump: Boolean(args.dumpPrompt) });
  Object.assign(summary, { nodeCount: result.nodeCount, notRegistered: result.notRegistered,
                           notRendered: result.notRendered, loadedTypes: result.loadedTypes });
  summary.missing = result.unknownBefore;
  if (args.dumpPrompt) fs.writeFileSync(args.dumpPrompt, JSON.stringify(result.prompt, null, 1));

  // frame the whole graph for the screenshot (the frontend's "Fit view" command; no click, which
  // would close the missing-nodes dialog)
  summary.fitView = await page.evaluate(async () => {
    try { await window.app.extensionManager.command.execute("Comfy.Canvas.FitView"); return true; }
    catch (e) { return String(e).slice(0, 200); }
  });
  // look for the missing-nodes dialog (text varies between frontend versions)
  await page.waitForTimeout(500);
  summary.dialogs = await page.evaluate(() =>
    [...document.querySelectorAll('[role="dialog"], .p-dialog, .comfy-modal')]
      .filter((d) => d.offsetParent !== null || getComputedStyle(d).display !== "none")
      .map((d) => d.innerText.trim().slice(0, 300)).filter(Boolean));
  const missingDialog = summary.dialogs.some((t) => /missing|not found|unknown node/i.test(t));
  summary.missingDialog = missingDialog;

  if (args.expectGlobal) {
    summary.expectGlobal = await page.evaluate((g) => Boolean(window[g]), args.expectGlobal);
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot });

  const problems = summary.missing.length > 0 || missingDialog || (summary.notRegistered || []).length > 0
      || (summary.notRendered || []).length > 0
      || (args.expectGlobal && !summary.expectGlobal) || summary.nodeCount === 0;
  summary.ok = args.expectMissing ? (summary.missing.length > 0 && missingDialog) : !problems;
} catch (e) {
  summary.error = String(e).slice(0, 1000);
} finally {
  summary.msTotal = Date.now() - t0;
  await browser.close();
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
