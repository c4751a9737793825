// The replay provider: answers `llm.v1.chat.replay` from a recorded transcript instead of a
// model, for offline demos and deterministic tests. Turn N of a conversation (N = the number of
// assistant messages the request already holds) gets line N of the transcript, modulo its
// length, so a multi-turn demo replays in order without the capsule keeping any state.
//
// It never passes itself off as a model: the reply's provider is "replay", its metadata says
// `replay: true` with the transcript and line, and the cost is zero (nobody was paid). The
// recorded text and tool calls are unchanged, and are streamed as deltas word by word.

const TRANSCRIPT_ENV = "REPLAY_TRANSCRIPT";

function fail(message) {
  throw new Error(`replay: ${message}`);
}

async function loadTranscript(path) {
  const text = astrid.utf8.decode(await astrid.fs.read(path));
  const lines = text.split("\n").filter((l) => l.trim().length > 0);
  if (lines.length === 0) fail(`transcript ${path} has no lines`);
  return lines;
}

function parseLine(path, lines, index) {
  let body;
  try {
    body = JSON.parse(lines[index]);
  } catch (err) {
    fail(`transcript ${path} line ${index + 1} is not JSON: ${err.message}`);
  }
  if (body === null || typeof body !== "object" || !Array.isArray(body.content)) {
    fail(
      `transcript ${path} line ${index + 1} is not an llm.chat.response body (no content array)`,
    );
  }
  return body;
}

/** Words with the whitespace before them, so the deltas join back to the exact text. */
function words(text) {
  return text.match(/\s*\S+|\s+$/g) ?? [];
}

async function streamContent(content) {
  for (const part of content) {
    if (part.type === "text") {
      for (const w of words(part.text)) await astrid.streamDelta({ text: w });
    } else if (part.type === "tool_use") {
      await astrid.streamDelta({
        toolUse: { id: part.id, name: part.name, inputJson: JSON.stringify(part.input ?? {}) },
      });
    }
  }
  await astrid.streamDelta({ done: true });
}

export async function chat(request) {
  const path = astrid.sys.config(TRANSCRIPT_ENV);
  if (!path) fail(`${TRANSCRIPT_ENV} is not set`);
  const lines = await loadTranscript(path);
  const turn = request.messages.filter((m) => m.role === "assistant").length;
  const index = turn % lines.length;
  const recorded = parseLine(path, lines, index);
  await streamContent(recorded.content);
  const usage = recorded.usage ?? {};
  return {
    provider: "replay",
    model: typeof recorded.model === "string" && recorded.model ? recorded.model : "replay",
    content: recorded.content,
    stopReason: recorded.stopReason ?? "end_turn",
    usage: {
      inputTokens: Number.isInteger(usage.inputTokens) ? usage.inputTokens : 0,
      outputTokens: Number.isInteger(usage.outputTokens) ? usage.outputTokens : 0,
      costMicroUsd: 0,
    },
    metadata: {
      replay: true,
      transcript: path,
      line: index + 1,
      recordedProvider: recorded.provider ?? null,
    },
  };
}
