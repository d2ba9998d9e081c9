/** What a TypeScript source imports, read from its text (the layer and platform tests use it). */

/** The module specifiers `source` imports or re-exports (static, dynamic and side-effect imports). */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|\s)(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|(?:^|\s)import\s*\(?\s*['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) out.push((m[1] ?? m[2])!);
  return out;
}
