/**
 * MCP tool result content → the wire's ToolOutput parts. The wire carries text and JSON only;
 * every other MCP kind becomes a JSON part that keeps all of it (data, uri, mime type), so
 * nothing a server returned is dropped without the caller seeing it.
 */
import type { CallToolResult, ContentBlock } from "@modelcontextprotocol/sdk/types.js";
import type { z } from "zod";
import type { ToolOutput } from "../../../core/protocol/messages.js";

export type ToolOutputPart = z.infer<typeof ToolOutput>;

export function toolOutputOf(block: ContentBlock): ToolOutputPart {
  switch (block.type) {
    case "text":
      return { type: "text", text: block.text };
    case "image":
    case "audio":
      return {
        type: "json",
        value: { type: block.type, mimeType: block.mimeType, data: block.data },
      };
    case "resource":
      return { type: "json", value: { type: "resource", ...block.resource } };
    case "resource_link":
      return {
        type: "json",
        value: {
          type: "resource_link",
          uri: block.uri,
          name: block.name,
          mimeType: block.mimeType,
          description: block.description,
        },
      };
    default:
      return { type: "json", value: block };
  }
}

/**
 * `structuredContent` is kept only when the server sent no content blocks: the spec asks
 * servers to repeat it as text, and sending both would double what the model reads.
 */
export function toolOutputsOf(result: CallToolResult): ToolOutputPart[] {
  const parts = result.content.map(toolOutputOf);
  if (parts.length === 0 && result.structuredContent !== undefined) {
    parts.push({ type: "json", value: result.structuredContent });
  }
  return parts;
}
