// Validates element templates with Camunda's own validator (validateZeebe, Camunda 8 schema).
//
// usage:  node tests/template/validate_templates.mjs FILE...
// stdout: one JSON object: {"<file>": {"valid": bool, "errors": [...], "warnings": [...]}, ...}
// A file holding a JSON array is checked with validateAllZeebe, template by template.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { validateZeebe, validateAllZeebe, getZeebeSchemaVersion } =
  require('@bpmn-io/element-templates-validator');

function simplify(problems) {
  return (problems || []).map(({ message, instancePath, dataPointer, params }) => ({
    message,
    path: instancePath,
    line: dataPointer ? dataPointer.value.line + 1 : undefined,
    params,
  }));
}

const report = { schemaVersion: getZeebeSchemaVersion(), files: {} };
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, 'utf-8');
  const parsed = JSON.parse(text);
  // The JSON text gives errors with line numbers; an array goes through validateAllZeebe.
  const results = Array.isArray(parsed)
    ? validateAllZeebe(parsed).results
    : [validateZeebe(text)];
  report.files[file] = results.map((result) => ({
    valid: result.valid,
    errors: simplify(result.errors),
    warnings: simplify(result.warnings),
  }));
}
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
