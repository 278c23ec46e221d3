// @ts-check
// A tiny static server for the built storefront: GET/HEAD only, bound to 127.0.0.1 by default,
// with the headers the page needs — COOP/COEP (cross-origin isolation, so ONNX Runtime may use
// WASM threads) and exact MIME types (.wasm must be application/wasm for streaming compilation).
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, resolve, sep } from "node:path";

/** @type {Record<string, string>} */
export const MIME_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".safetensors": "application/octet-stream",
  ".data": "application/octet-stream",
  ".bin": "application/octet-stream",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
};

/**
 * @param {string} root
 * @param {string} rel  URL path below the mount, already decoded
 */
function inside(root, rel) {
  const full = resolve(root, `.${sep}${rel}`);
  return full === root || full.startsWith(root + sep) ? full : null;
}

/**
 * Starts the server. `/pack/…` is served from `packDir` (with CORS, like a pack host would),
 * everything else from `root` (the built site).
 * @param {{ root: string, packDir: string, host?: string, port?: number, log?: (line: string) => void }} options
 * @returns {Promise<{ url: string, port: number, close: () => Promise<void> }>}
 */
export async function startServer({ root, packDir, host = "127.0.0.1", port = 8080, log = () => {} }) {
  const siteRoot = resolve(root);
  const packRoot = resolve(packDir);
  const server = createServer(async (req, res) => {
    const send = (/** @type {number} */ status, /** @type {string} */ body) => {
      res.writeHead(status, { ...ISOLATION, "Content-Type": "text/plain; charset=utf-8" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    try {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("Allow", "GET, HEAD");
        return send(405, "method not allowed\n");
      }
      const url = new URL(req.url ?? "/", "http://localhost");
      let path;
      try {
        path = decodeURIComponent(url.pathname);
      } catch {
        return send(400, "bad path\n");
      }
      if (path.includes("\0")) return send(400, "bad path\n");
      const isPack = path.startsWith("/pack/");
      let file = isPack ? inside(packRoot, path.slice("/pack/".length)) : inside(siteRoot, path === "/" ? "index.html" : path.slice(1));
      if (!file) return send(404, "not found\n");
      let info = await stat(file).catch(() => null);
      if (info?.isDirectory()) {
        file = resolve(file, "index.html");
        info = await stat(file).catch(() => null);
      }
      if (!info?.isFile()) return send(404, "not found\n");
      /** @type {Record<string, string | number>} */
      const headers = {
        ...ISOLATION,
        "Content-Type": MIME_TYPES[extname(file).toLowerCase()] ?? "application/octet-stream",
        "Content-Length": info.size,
        "Last-Modified": info.mtime.toUTCString(),
        // ONNX Runtime lives under ort/<version>/: immutable. Packs are versioned by the page's
        // Cache Storage; everything else is revalidated.
        "Cache-Control": path.startsWith("/ort/") ? "public, max-age=31536000, immutable" : "no-cache",
      };
      if (isPack) {
        headers["Access-Control-Allow-Origin"] = "*";
        headers["Cross-Origin-Resource-Policy"] = "cross-origin";
      }
      const since = req.headers["if-modified-since"];
      if (since && Math.floor(info.mtimeMs / 1000) <= Math.floor(Date.parse(since) / 1000)) {
        res.writeHead(304, { ...ISOLATION, "Last-Modified": headers["Last-Modified"], "Cache-Control": headers["Cache-Control"] });
        return res.end();
      }
      res.writeHead(200, headers);
      if (req.method === "HEAD") return res.end();
      createReadStream(file)
        .on("error", () => res.destroy())
        .pipe(res);
      log(`${req.method} ${path} 200 ${info.size}`);
    } catch (e) {
      send(500, `internal error: ${/** @type {Error} */ (e).message}\n`);
    }
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => ok(undefined));
  });
  const addr = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${addr.port}/`,
    port: addr.port,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(() => ok(undefined));
      }),
  };
}
