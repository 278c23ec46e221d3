#!/usr/bin/env node
// Lists functions longer than N lines (default 80) in packages/*/src, tests excluded: the size
// check of issue 17. `node scripts/function-lengths.mjs [N] [--all]`; exits 1 when any is found.
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ts = createRequire(import.meta.url)("typescript");
const root = fileURLToPath(new URL("..", import.meta.url));
const limit = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 80);
const all = process.argv.includes("--all");

function* sources(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (/\.tsx?$/.test(e.name) && !/\.(test|d)\.tsx?$/.test(e.name)) yield p;
  }
}

const rows = [];
for (const pkg of readdirSync(join(root, "packages"))) {
  let files;
  try {
    files = [...sources(join(root, "packages", pkg, "src"))];
  } catch {
    continue;
  }
  for (const file of files) {
    const sf = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const visit = (node) => {
      if (ts.isFunctionLike(node) && "body" in node && node.body) {
        const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
        const end = sf.getLineAndCharacterOfPosition(node.end).line;
        const name = node.name?.getText(sf) ?? (ts.isVariableDeclaration(node.parent) ? node.parent.name.getText(sf) : "(anonymous)");
        rows.push({ where: `${relative(root, file)}:${start + 1}`, name, lines: end - start + 1 });
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
}
const long = rows.filter((r) => r.lines > limit).sort((a, b) => b.lines - a.lines);
for (const r of all ? rows.sort((a, b) => b.lines - a.lines) : long) console.log(`${String(r.lines).padStart(4)}  ${r.name}  ${r.where}`);
console.error(`${long.length} function(s) over ${limit} lines in packages/*/src (tests excluded)`);
process.exit(long.length > 0 ? 1 : 0);
