/**
 * A `fetch` for the SDK's streamable HTTP transport that reads a POST's answer (JSON or an
 * SSE stream) with a byte cap. The SDK reads bodies without limit, so a remote server could
 * make the sidecar hold any amount of memory; over the cap, the answer is replaced by a
 * JSON-RPC error for the request that was sent, so that call fails alone and at once.
 *
 * The standalone GET stream (server notifications) is passed through: it is long-lived and
 * the SDK reads it event by event.
 */
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { RESULT_TOO_LARGE } from "./errors.js";

export function cappedFetch(name: string, maxBytes: number, base: FetchLike = fetch): FetchLike {
  return async (url, init) => {
    const response = await base(url, init);
    if ((init?.method ?? "GET") !== "POST" || response.body === null) return response;
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel();
        return tooLarge(response, requestId(init?.body), name, maxBytes);
      }
      chunks.push(value);
    }
    return new Response(Buffer.concat(chunks), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}

function tooLarge(
  response: Response,
  id: string | number | undefined,
  name: string,
  maxBytes: number,
): Response {
  const message = `MCP server "${name}" sent an answer larger than ${maxBytes} bytes`;
  // Without a request id (a batch, a notification) nothing can be answered: fail the send.
  if (id === undefined) throw new Error(message);
  const headers = new Headers(response.headers);
  headers.set("content-type", "application/json");
  headers.delete("content-length");
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id,
    error: { code: RESULT_TOO_LARGE, message },
  });
  return new Response(body, { status: 200, headers });
}

function requestId(body: RequestInit["body"]): string | number | undefined {
  if (typeof body !== "string") return undefined;
  try {
    const msg = JSON.parse(body) as { id?: unknown };
    return typeof msg.id === "string" || typeof msg.id === "number" ? msg.id : undefined;
  } catch {
    return undefined;
  }
}
