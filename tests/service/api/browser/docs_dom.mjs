// Open a page of the gateway (its /docs) in jsdom, a headless DOM that runs the page's own
// scripts, with every request outside the gateway's origin refused: the offline machine the
// gateway is deployed on. Prints one JSON line: what rendered and what the page tried to fetch.
// Usage: node docs_dom.mjs URL [TIMEOUT_MS]
import { JSDOM, ResourceLoader, VirtualConsole } from "jsdom";

const [url, timeoutArg] = process.argv.slice(2);
const origin = new URL(url).origin;
const timeoutMs = Number(timeoutArg ?? 30000);
const refused = [];
const loaded = [];
const errors = [];

class OfflineLoader extends ResourceLoader {
  fetch(resource, options) {
    if (new URL(resource).origin !== origin) {
      refused.push(resource);
      return null; // as if the network were unreachable
    }
    loaded.push(resource);
    return super.fetch(resource, options);
  }
}

const virtualConsole = new VirtualConsole();
virtualConsole.on("jsdomError", (e) => errors.push(String(e.message ?? e)));

// The page's own XHR/fetch calls (Swagger UI fetches /openapi.json) get the same rule.
function offlineFetch(window) {
  return async (input, init) => {
    const target = new URL(typeof input === "string" ? input : input.url, window.location.href);
    if (target.origin !== origin) {
      refused.push(target.href);
      throw new TypeError(`offline: ${target.href}`);
    }
    loaded.push(target.href);
    return fetch(target, init);
  };
}

const dom = await JSDOM.fromURL(url, {
  resources: new OfflineLoader(),
  runScripts: "dangerously",
  pretendToBeVisual: true,
  virtualConsole,
  beforeParse(window) {
    window.fetch = offlineFetch(window);
    window.Headers = Headers;
    window.Request = Request;
    window.Response = Response;
  },
});

const doc = dom.window.document;
const started = Date.now();
let title = null;
while (Date.now() - started < timeoutMs) {
  const node = doc.querySelector(".swagger-ui .info .title");
  if (node && doc.querySelectorAll(".opblock").length > 0) {
    title = node.textContent.trim();
    break;
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
}
console.log(
  JSON.stringify({
    title,
    operations: doc.querySelectorAll(".opblock").length,
    loaded,
    refused,
    errors: errors.slice(0, 5),
    ms: Date.now() - started,
  }),
);
dom.window.close();
process.exit(0);
