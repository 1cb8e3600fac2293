// Matches values against element-template patterns the way Camunda Modeler does:
// new RegExp(pattern).test(value).
//
// stdin:  JSON array of {"pattern": "...", "value": "..."}
// stdout: JSON array of booleans, in the same order
import { readFileSync } from 'node:fs';

const cases = JSON.parse(readFileSync(0, 'utf-8'));
const results = cases.map(({ pattern, value }) => new RegExp(pattern).test(value));
process.stdout.write(JSON.stringify(results) + '\n');
