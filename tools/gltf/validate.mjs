#!/usr/bin/env node
// Validates glTF 2.0 files (GLB or JSON) with the Khronos glTF-Validator.
//
// Usage: node tools/gltf/validate.mjs FILE [FILE...]
//
// Prints one JSON report per file, one per line (JSON Lines), in argument order:
//   {"path": ..., "numErrors": n, "numWarnings": n, "numInfos": n, "numHints": n,
//    "messages": [{"code", "message", "severity", "pointer"}...], "info": {...}}
// Exit status: 0 when no file has errors, 1 when some file has errors,
// 2 on bad usage or when a file cannot be read or parsed at all.

import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { validateBytes, version } from 'gltf-validator';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

async function validateFile(path) {
  const bytes = new Uint8Array(await readFile(path));
  const result = await validateBytes(bytes, {
    uri: basename(path),
    maxIssues: 200,
    externalResourceFunction: () => Promise.reject(new Error('external resources are not allowed')),
  });
  const issues = result.issues;
  return {
    path,
    validatorVersion: version(),
    numErrors: issues.numErrors,
    numWarnings: issues.numWarnings,
    numInfos: issues.numInfos,
    numHints: issues.numHints,
    messages: issues.messages.map((m) => ({
      code: m.code,
      message: m.message,
      severity: SEVERITY[m.severity] ?? String(m.severity),
      pointer: m.pointer ?? null,
    })),
    info: result.info ?? null,
  };
}

async function main(paths) {
  if (paths.length === 0) {
    process.stderr.write('usage: node validate.mjs FILE [FILE...]\n');
    return 2;
  }
  let status = 0;
  for (const path of paths) {
    let report;
    try {
      report = await validateFile(path);
    } catch (error) {
      report = { path, fatal: String(error?.message ?? error), numErrors: 1, numWarnings: 0 };
      status = 2;
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
    if (report.numErrors > 0 && status === 0) {
      status = 1;
    }
  }
  return status;
}

process.exitCode = await main(process.argv.slice(2));
