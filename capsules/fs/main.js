// The fs tool capsule: every path is workspace-relative (`cwd://`); the manifest gate refuses
// anything outside the workspace, and guided mode asks before each write.
const MAX_READ = 256 * 1024;
const MAX_MATCHES = 50;
const MAX_FILES = 2000;

const str = { type: "string" };
const tools = [
  {
    name: "read_file",
    description: "Read a text file of the workspace (path relative to the workspace)",
    inputSchema: { type: "object", properties: { path: str }, required: ["path"] },
  },
  {
    name: "write_file",
    description: "Write a text file of the workspace, replacing it",
    inputSchema: {
      type: "object",
      properties: { path: str, text: str },
      required: ["path", "text"],
    },
  },
  {
    name: "list_dir",
    description: "List a directory of the workspace",
    inputSchema: { type: "object", properties: { path: str } },
  },
  {
    name: "search",
    description: "Find lines containing a text in the workspace's files",
    inputSchema: {
      type: "object",
      properties: { text: str, path: str },
      required: ["text"],
    },
  },
];

export function describe() {
  return { tools };
}

function where(p) {
  const rel = String(p ?? ".")
    .replace(/^cwd:\/\//, "")
    .replace(/^\.?\/+/, "");
  return `cwd://${rel === "" || rel === "." ? "" : rel}`;
}

const ok = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: false });
const fail = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: true });

async function guarded(callId, fn) {
  try {
    return ok(callId, await fn());
  } catch (e) {
    // A denial (gate, approval) fails the call so the orchestrator learns it was refused; any
    // other failure (missing file, bad path) is a result the model can read and work around.
    if (e.code === "denied") throw e;
    return fail(callId, `${e.code ?? "error"}: ${e.message}`);
  }
}

export function readFile({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const bytes = await astrid.fs.read(where(a.path));
    const text = astrid.utf8.decode(bytes.length > MAX_READ ? bytes.subarray(0, MAX_READ) : bytes);
    return bytes.length > MAX_READ ? `${text}\n[truncated at ${MAX_READ} bytes]` : text;
  });
}

export function writeFile({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const bytes = astrid.utf8.encode(String(a.text ?? ""));
    await astrid.fs.write(where(a.path), bytes);
    return `wrote ${bytes.length} bytes to ${a.path}`;
  });
}

export function listDir({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const entries = await astrid.fs.list(where(a.path));
    return entries.map((e) => (e.kind === "dir" ? `${e.name}/` : e.name)).join("\n");
  });
}

export function search({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const needle = String(a.text ?? "");
    if (!needle) throw Object.assign(new Error("search needs a text"), { code: "invalid" });
    const matches = [];
    const queue = [
      String(a.path ?? ".")
        .replace(/^cwd:\/\//, "")
        .replace(/\/+$/, "") || ".",
    ];
    let files = 0;
    while (queue.length > 0 && matches.length < MAX_MATCHES && files < MAX_FILES) {
      const dir = queue.shift();
      for (const e of await astrid.fs.list(where(dir))) {
        if (e.name.startsWith(".")) continue;
        const p = dir === "." ? e.name : `${dir}/${e.name}`;
        if (e.kind === "dir") queue.push(p);
        else if (e.kind === "file") {
          files++;
          const text = astrid.utf8.decode(await astrid.fs.read(where(p)));
          text.split("\n").forEach((line, i) => {
            if (line.includes(needle) && matches.length < MAX_MATCHES) {
              matches.push(`${p}:${i + 1}: ${line.slice(0, 200)}`);
            }
          });
        }
      }
    }
    return matches.length > 0 ? matches.join("\n") : `no line contains "${needle}"`;
  });
}
