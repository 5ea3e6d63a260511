// A run longer than the client's request timeout, through the official TypeScript clients as Claude Desktop
// uses them: run_runnable, then get_run with the handle while the run is still going (driven by
// tests/test_detach_typescript.py).
//
// Usage: node detach_client.mjs KIND stdio PYTHON ENV_JSON ARGS_JSON TIMEOUT   (the server as a child process)
//        node detach_client.mjs KIND http URL TOKEN ARGS_JSON TIMEOUT          (streamable HTTP)
// KIND: "sdk1" (@modelcontextprotocol/sdk 1.x, as Claude Desktop; it speaks 2025-11-25 and cannot choose) or
// "client2-2026" (@modelcontextprotocol/client 2.x pinned to 2026-07-28). ARGS_JSON: run_runnable's arguments.
// TIMEOUT: each request's timeout in ms, or "default": then no timeout option is passed at all, and the SDK's own
// DEFAULT_REQUEST_TIMEOUT_MSEC (60 s) applies.
// Prints one JSON line: {version, calls: [{tool, ms, isError, structuredContent, text} | {tool, ms, thrown}]}.
import { Client as ClientV2, StreamableHTTPClientTransport as HttpV2 } from "@modelcontextprotocol/client";
import { StdioClientTransport as StdioV2 } from "@modelcontextprotocol/client/stdio";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport as StdioV1 } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport as HttpV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { performance } from "node:perf_hooks";

const [kind, mode, target, extra, argsJson, timeout] = process.argv.slice(2);
const MAX_CALLS = 30; // a bound on the get_run loop, whatever the server answers

const info = { name: "detach-test", version: "1.0.0" };
const v1 = kind === "sdk1";
if (!v1 && kind !== "client2-2026") throw new Error(`unknown client kind ${kind}`);
const [Stdio, Http] = v1 ? [StdioV1, HttpV1] : [StdioV2, HttpV2];
const transport =
  mode === "stdio"
    ? new Stdio({ command: target, args: ["-m", "refactor_mcp"], env: JSON.parse(extra), stderr: "inherit" })
    : new Http(new URL(target), { requestInit: { headers: { Authorization: `Bearer ${extra}` } } });
const client = v1 ? new ClientV1(info) : new ClientV2(info, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
await client.connect(transport);
const version = client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion ?? null;
await client.listTools(); // so the SDK checks each result's structuredContent against the tool's outputSchema

// "default": no options object at all, exactly as a caller that never heard of timeouts calls.
const options = timeout === "default" ? [] : [{ timeout: Number(timeout) }];

async function timed(name, args) {
  const params = { name, arguments: args };
  const started = performance.now();
  try {
    const result = await (v1 ? client.callTool(params, undefined, ...options) : client.callTool(params, ...options));
    return {
      tool: name,
      ms: Math.round(performance.now() - started),
      isError: result.isError ?? false,
      structuredContent: result.structuredContent ?? null,
      text: (result.content ?? []).map((block) => block.text ?? "").join("\n"),
    };
  } catch (error) {
    return { tool: name, ms: Math.round(performance.now() - started), thrown: String(error) };
  }
}

const calls = [await timed("run_runnable", JSON.parse(argsJson))];
let last = calls[0];
while (last.structuredContent?.status === "running" && calls.length < MAX_CALLS) {
  last = await timed("get_run", { handle: last.structuredContent.handle });
  calls.push(last);
}

try {
  await client.close();
} catch {
  // Closing is not what is tested.
}
console.log(JSON.stringify({ version, calls }));
process.exit(0);
