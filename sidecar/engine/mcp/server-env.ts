/**
 * The environment a stdio MCP server starts with. The sidecar's own environment holds its
 * signing key path, bus credentials and whatever the operator injected; a capsule's server is
 * third-party code and gets none of it. It gets:
 *   - PATH, so a command like "node" or "uvx" resolves as it would for the sidecar;
 *   - HOME set to a directory the caller chooses (the package or a scratch dir), so a server
 *     that reads ~/.config or ~/.netrc finds nothing of the sidecar user's;
 *   - the variables the manifest declared, with their resolved values.
 */
export function serverEnvironment(
  declared: Readonly<Record<string, string>>,
  home: string,
  path: string = process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
): Record<string, string> {
  return { PATH: path, HOME: home, ...declared };
}
