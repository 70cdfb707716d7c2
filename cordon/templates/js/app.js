// {{name}}: a Cordon plugin in JavaScript.
//
// Build with `make` (componentize-js from npm), then copy `{{name}}.wasm` into Cordon's plugins
// folder: the tool is served as `{{prefix}}_hello`. `cordon.js` is the helper: `tool()` registers
// a handler with its schema, `ToolError` is a typed error the caller sees.
import { log, tool, ToolError, tools } from "./cordon.js";

// The export componentize-js implements `cordon:plugin/tools` with.
export { tools };

tool(
  {
    name: "hello",
    description: "Greets someone by name. Fails with `empty_name` when the name is blank.",
    inputSchema: {
      type: "object",
      properties: { name: { type: "string", description: "Who to greet." } },
      required: ["name"],
      additionalProperties: false,
    },
    readOnly: true,
  },
  ({ name }, ctx) => {
    if (!name.trim()) throw new ToolError("empty_name", "the name is blank");
    log.info(`greeting ${name} for ${ctx.principal}`);
    return `Hello, ${name.trim()}!`;
  },
);

