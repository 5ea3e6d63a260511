// The official TypeScript SDK 1.x and LangChain.js's MCP adapters against the real server (driven by
// tests/test_interop_typescript.py).
//
// Usage: node interop_client.mjs stdio PYTHON ENV_JSON IDS_JSON   (the server as a child process)
//        node interop_client.mjs http URL TOKEN IDS_JSON            (streamable HTTP)
// IDS_JSON is {"echo": uuid, "fail": uuid}. Prints one JSON line of what each client saw; the test asserts on it.
// The SDK checks structuredContent against the outputSchema on every result that is not an error; error results
// are checked here with the SDK's own validator, so every result is held to the schema.
import { loadMcpTools } from "@langchain/mcp-adapters";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv-provider.js";

const [mode, target, extra, idsJson] = process.argv.slice(2);
const ids = JSON.parse(idsJson);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: target, args: ["-m", "refactor_mcp"], env: JSON.parse(extra), stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(target), { requestInit: { headers: { Authorization: `Bearer ${extra}` } } });
const client = new Client({ name: "interop-test", version: "1.0.0" });
await client.connect(transport);

const { tools } = await client.listTools();
const outputSchema = tools.find((tool) => tool.name === "run_runnable").outputSchema;
const matchesSchema = new AjvJsonSchemaValidator().getValidator(outputSchema);
const inline = { name: "note.txt", directory_path: "/in", text: "The parties agree." };

async function sdkCall(args) {
  try {
    const result = await client.callTool({ name: "run_runnable", arguments: args });
    const checked = matchesSchema(result.structuredContent);
    return {
      isError: result.isError ?? false,
      text: result.content.map((block) => block.text).join("\n"),
      structuredContent: result.structuredContent,
      valid: checked.valid,
      schemaError: checked.errorMessage ?? null,
    };
  } catch (error) {
    return { thrown: String(error) };
  }
}

async function langchainCall(tool, args) {
  try {
    const [content] = await tool.invoke(args, { metadata: {} }).then((out) => [out]);
    return { content: typeof content === "string" ? content : JSON.stringify(content) };
  } catch (error) {
    return { thrown: String(error) };
  }
}

// timeout_seconds: null (no limit) is taken at run time though the schema does not advertise it: the SDK sends
// arguments as they are, while LangChain.js checks them against the schema first, so it sends 0 (no limit too).
const sdk = {
  completed: await sdkCall({ runnable_id: ids.echo, timeout_seconds: null, resources: [{ name: "note", resource: inline }] }),
  failed: await sdkCall({ runnable_id: ids.fail }),
  invalid: await sdkCall({ runnable_id: ids.echo, resources: [{ name: "note", resource: { name: "x" } }] }),
};

const langchainTools = await loadMcpTools("refactor", client, { throwOnLoadError: true });
const runTool = langchainTools.find((tool) => tool.name === "run_runnable");
const langchain = {
  tools: langchainTools.map((tool) => tool.name),
  schema: runTool.schema,
  byId: await langchainCall(runTool, {
    runnable_id: ids.echo,
    timeout_seconds: 0,
    resources: [{ name: "glossary", resource: { id: ids.fail } }],
  }),
  inline: await langchainCall(runTool, { runnable_id: ids.echo, resources: [{ name: "note", resource: inline }] }),
  failed: await langchainCall(runTool, { runnable_id: ids.fail }),
  nullTimeout: await langchainCall(runTool, { runnable_id: ids.echo, timeout_seconds: null }),
};

await client.close();
console.log(JSON.stringify({ sdk, langchain }));
