import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { MODE_TABLE_END, MODE_TABLE_START, modeTableMarkdown } from "./mode-table-markdown.js";
import * as modesApi from "./modes.js";
import {
  approvalReason,
  budgetEnforcement,
  needsApproval,
  parseSecurityMode,
  SecurityModeError,
  sessionPolicy,
} from "./modes.js";
import * as tableApi from "./policy-table.js";
import {
  ACTION_CLASSES,
  MODE_TABLE,
  type ModeAction,
  type ModePolicy,
  SECURITY_MODES,
} from "./policy-table.js";

const inside = (kind: "fs_read" | "fs_write"): ModeAction => ({ kind, inWorkspace: true });
const outside = (kind: "fs_read" | "fs_write"): ModeAction => ({ kind, inWorkspace: false });

describe("needsApproval", () => {
  it("safe: only reads inside the workspace pass", () => {
    expect(needsApproval("safe", inside("fs_read"))).toBe(false);
    expect(needsApproval("safe", outside("fs_read"))).toBe(true);
    expect(needsApproval("safe", inside("fs_write"))).toBe(true);
    for (const kind of ["net", "process", "tool", "capsule_install"] as const) {
      expect(needsApproval("safe", { kind })).toBe(true);
    }
  });

  it("guided: reads pass, writes ask", () => {
    expect(needsApproval("guided", outside("fs_read"))).toBe(false);
    expect(needsApproval("guided", inside("fs_write"))).toBe(true);
    expect(needsApproval("guided", { kind: "net" })).toBe(true);
  });

  it("autonomous and yolo never ask", () => {
    for (const mode of ["autonomous", "yolo"] as const) {
      expect(Object.values(MODE_TABLE[mode].approvals)).toEqual(ACTION_CLASSES.map(() => "allow"));
    }
  });

  it("a file whose location is unknown is treated as outside", () => {
    const unknown = { kind: "fs_read", inWorkspace: undefined } as unknown as ModeAction;
    expect(needsApproval("safe", unknown)).toBe(true);
  });

  it("--yes answers approvals as autonomous but keeps the mode's budget enforcement", () => {
    expect(needsApproval("safe", { kind: "process" }, { yes: true })).toBe(false);
    expect(sessionPolicy("safe", { yes: true }).budget).toBe("enforce");
    expect(sessionPolicy("yolo", { yes: true }).budget).toBe("warn");
  });

  it("names the reason shown to the approver", () => {
    expect(approvalReason("guided", inside("fs_write"))).toBe(
      "guided mode: fs_write inside the workspace asks",
    );
  });
});

describe("modes are ordered by strictness", () => {
  const strict = { ask: 1, allow: 0 } as const;
  it("safe ≥ guided ≥ autonomous = yolo on every action", () => {
    for (const c of ACTION_CLASSES) {
      const [s, g, a, y] = SECURITY_MODES.map((m) => strict[MODE_TABLE[m].approvals[c]]);
      expect(s).toBeGreaterThanOrEqual(g!);
      expect(g).toBeGreaterThanOrEqual(a!);
      expect(a).toBe(y);
    }
  });
});

describe("budgetEnforcement", () => {
  it("only yolo warns", () => {
    expect(SECURITY_MODES.map(budgetEnforcement)).toEqual([
      "enforce",
      "enforce",
      "enforce",
      "warn",
    ]);
  });
});

describe("parseSecurityMode", () => {
  it.each([["paranoid"], [""], [3], ["SAFE"]])("refuses %j", (v) => {
    expect(() => parseSecurityMode(v)).toThrow(
      new SecurityModeError(
        `unknown security mode ${JSON.stringify(v)}; expected one of safe, guided, autonomous, yolo`,
      ),
    );
  });

  it("refuses an unknown mode in every query instead of defaulting", () => {
    expect(() => needsApproval("off" as never, { kind: "net" })).toThrow(SecurityModeError);
    expect(() => budgetEnforcement("off" as never)).toThrow(SecurityModeError);
  });
});

describe("no mode can turn off the sandbox, gate, ACL or tokens", () => {
  it("a mode's policy holds approvals and budget, nothing else", () => {
    for (const m of SECURITY_MODES) {
      expect(Object.keys(MODE_TABLE[m]).sort()).toEqual(["approvals", "budget"]);
      expect(Object.keys(MODE_TABLE[m].approvals)).toEqual([...ACTION_CLASSES]);
    }
  });

  it("the mode API exports nothing that could skip a layer", () => {
    const names = [...Object.keys(modesApi), ...Object.keys(tableApi)];
    expect(
      names.filter((n) => /sandbox|gate|acl|token|skip|disable|bypass|layer/i.test(n)),
    ).toEqual([]);
    expect(Object.keys(modesApi).sort()).toEqual([
      "SecurityModeError",
      "approvalReason",
      "budgetEnforcement",
      "needsApproval",
      "parseSecurityMode",
      "sessionPolicy",
    ]);
  });

  it("the table cannot be changed at run time", () => {
    expect(() => {
      (MODE_TABLE.safe.approvals as Record<string, string>).net = "allow";
    }).toThrow(TypeError);
    expect(() => {
      (MODE_TABLE as Record<string, unknown>).safe = {};
    }).toThrow(TypeError);
    expect(needsApproval("safe", { kind: "net" })).toBe(true);
  });

  it("the type has no place for a layer switch", () => {
    const p: ModePolicy = {
      approvals: MODE_TABLE.yolo.approvals,
      budget: "warn",
      // @ts-expect-error — ModePolicy has no sandbox field: typecheck fails if one is added.
      sandbox: "off",
    };
    expect(p.budget).toBe("warn");
  });
});

describe("docs/security.md", () => {
  it("holds exactly the generated mode table", async () => {
    const doc = await readFile(new URL("../../../docs/security.md", import.meta.url), "utf8");
    const start = doc.indexOf(MODE_TABLE_START);
    const end = doc.indexOf(MODE_TABLE_END);
    expect(start, `docs/security.md lacks ${MODE_TABLE_START}`).toBeGreaterThanOrEqual(0);
    expect(end).toBeGreaterThan(start);
    expect(doc.slice(start + MODE_TABLE_START.length, end).trim()).toBe(modeTableMarkdown().trim());
  });
});
