import { describe, expect, it } from "vitest";
import { parseResource, ResourceScope } from "./resource.js";

describe("parseResource", () => {
  it("parses each kind", () => {
    expect(parseResource("tool:github/*", "glob")).toEqual({ kind: "tool", value: "github/*" });
    expect(parseResource("fs:/work/**", "glob")).toEqual({ kind: "fs", value: "/work/**" });
    expect(parseResource("net:*.example.com:443", "glob")).toEqual({
      kind: "net",
      value: "*.example.com:443",
    });
    expect(parseResource("topic:tool.v1.*", "glob")).toEqual({ kind: "topic", value: "tool.v1.*" });
  });

  it("refuses requests that hide a path escape or a glob", () => {
    expect(() => parseResource("fs:/work/./a", "request")).toThrow(
      'resource "fs:/work/./a": "." and ".." path segments are refused',
    );
    expect(() => parseResource("fs:/work//a", "request")).toThrow(
      'resource "fs:/work//a": empty path segment (double or trailing "/")',
    );
    expect(() => parseResource("fs:/work/*", "request")).toThrow(
      'resource "fs:/work/*": a requested path may not contain glob characters',
    );
    expect(() => parseResource("fs:/work\\..\\etc", "glob")).toThrow(
      'resource "fs:/work\\..\\etc": fs paths may not contain "\\" or control characters',
    );
  });

  it("refuses a wildcard host in a request and a port out of range", () => {
    expect(() => parseResource("net:*.example.com:443", "request")).toThrow(
      'resource "net:*.example.com:443": expected net:<host>:<port 1-65535>; the host must be lowercase letters, digits and "-" labels, or an IP address',
    );
    expect(() => parseResource("net:example.com:70000", "glob")).toThrow(
      'resource "net:example.com:70000": expected net:<host>:<port 1-65535>',
    );
  });
});

describe("ResourceScope", () => {
  it("does not let ** reach dotfiles unless the glob names them", () => {
    const scope = new ResourceScope(["fs:/work/**", "fs:/work/.config/app.toml"]);
    expect(scope.match("fs:/work/src/a.ts")).toBe("fs:/work/**");
    expect(scope.match("fs:/work/.env")).toBeUndefined();
    expect(scope.match("fs:/work/.config/app.toml")).toBe("fs:/work/.config/app.toml");
    expect(scope.match("fs:/workspace/a")).toBeUndefined();
  });

  it("treats a leading ! and extglobs literally instead of as negation", () => {
    const scope = new ResourceScope(["fs:/work/!(secret)"]);
    expect(scope.match("fs:/work/public")).toBeUndefined();
    expect(() => new ResourceScope(["tool:!secret"])).toThrow(
      'resource "tool:!secret": expected tool:<name glob> of A-Z a-z 0-9 _ . - / * ? { } ,',
    );
  });

  it("matches kinds only against their own prefix", () => {
    const scope = new ResourceScope(["tool:*"]);
    expect(scope.match("topic:a")).toBeUndefined();
  });
});
