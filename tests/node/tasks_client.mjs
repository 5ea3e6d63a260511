// The 2025-11-25 experimental tasks through the official TypeScript SDK 1.x, as a real client drives them
// (driven by tests/test_tasks_http.py): listTools() (which tells the SDK that run_runnable takes a task), then
// client.experimental.tasks.callToolStream, which sends `task`, polls tasks/get and fetches tasks/result.
//
// Usage: node tasks_client.mjs URL TOKEN ARGS_JSON ACTION
// ACTION "complete": the stream to its end. ACTION "cancel": the stream until the task is created, then (once a line
// arrives on stdin: the test has seen the upstream request) cancelTask and getTask.
// Prints one JSON line per event: {event: "taskCreated" | "taskStatus" | "result" | "error" | "cancelled" | "got",
// ...} and last {event: "done", version}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createInterface } from "node:readline";

const [url, token, argsJson, action] = process.argv.slice(2);
const MAX_EVENTS = 60; // a bound on the SDK's polling loop, whatever the server answers

const say = (event) => console.log(JSON.stringify(event));
const client = new Client({ name: "tasks-test", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
await client.connect(transport);
const tools = await client.listTools();
say({ event: "tools", execution: Object.fromEntries(tools.tools.map((tool) => [tool.name, tool.execution ?? null])) });

const stream = client.experimental.tasks.callToolStream({ name: "run_runnable", arguments: JSON.parse(argsJson) });
let events = 0;
let created = null;
for await (const message of stream) {
  if (message.type === "error") say({ event: "error", code: message.error.code, message: message.error.message });
  else if (message.type === "result") say({ event: "result", result: message.result });
  else say({ event: message.type, task: message.task });
  if (message.type === "taskCreated") created = message.task;
  if ((action === "cancel" && created !== null) || ++events >= MAX_EVENTS) break;
}

if (action === "cancel" && created !== null) {
  const lines = createInterface({ input: process.stdin });
  for await (const _ of lines) break; // the go-ahead
  lines.close();
  try {
    say({ event: "cancelled", task: await client.experimental.tasks.cancelTask(created.taskId) });
  } catch (error) {
    say({ event: "error", code: error.code, message: error.message });
  }
  say({ event: "got", task: await client.experimental.tasks.getTask(created.taskId) });
}

say({ event: "done", version: transport.protocolVersion ?? null });
try {
  await client.close();
} catch {
  // Closing is not what is tested.
}
process.exit(0);
