// Evaluates FEEL expressions with feelin, the reference for the differential test.
//
// stdin:  one JSON object per line: {"id": "...", "expression": "...", "context": {...}}
// stdout: one JSON object per line: {"id": "...", "ok": true, "value": ..., "warnings": [...]}
//         or {"id": "...", "ok": false, "error": "..."} when feelin throws.
//
// The connector functions of Camunda's connector runtime are defined in the context as plain
// JavaScript functions returning the contexts the runtime's Java functions return.
import { createInterface } from 'node:readline';
import { evaluate, duration, FeelDuration } from 'feelin';

function failure(message) {
  throw new Error(message);
}

function isContext(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const connectorFunctions = {
  bpmnError(errorCode, errorMessage, variables) {
    if (typeof errorCode !== 'string') {
      failure("parameter 'errorCode' of function 'bpmnError' must be a string");
    }
    const result = { errorType: 'bpmnError', errorCode };
    if (errorMessage !== undefined && errorMessage !== null) {
      if (typeof errorMessage !== 'string') {
        failure("parameter 'errorMessage' of function 'bpmnError' must be a string");
      }
      result.errorMessage = errorMessage;
    }
    if (variables !== undefined && variables !== null) {
      if (!isContext(variables)) {
        failure("parameter 'variables' of function 'bpmnError' must be a context");
      }
      result.variables = variables;
    }
    return result;
  },

  jobError(errorMessage, variables, retries, retryBackoff) {
    if (typeof errorMessage !== 'string') {
      failure("parameter 'errorMessage' of function 'jobError' must be a string");
    }
    if (variables !== undefined && variables !== null && !isContext(variables)) {
      failure("parameter 'variables' of function 'jobError' must be a context");
    }
    if (retries !== undefined && retries !== null && typeof retries !== 'number') {
      failure("parameter 'retries' of function 'jobError' must be a number");
    }
    let backoff = retryBackoff;
    if (backoff === undefined || backoff === null) {
      backoff = duration('PT0S');
    } else if (typeof backoff === 'string') {
      backoff = duration(backoff);
    }
    if (!(backoff instanceof FeelDuration) || backoff.yearsMonths) {
      failure("parameter 'retryBackoff' of function 'jobError' must be a days-and-time duration");
    }
    return {
      errorType: 'jobError',
      errorMessage,
      variables: variables ?? {},
      retries: retries ?? 0,
      retryBackoff: backoff,
    };
  },

  ignoreError(variables) {
    if (variables === undefined || variables === null) {
      return { errorType: 'ignoreError' };
    }
    if (!isContext(variables)) {
      failure("parameter 'variables' of function 'ignoreError' must be a context");
    }
    return { errorType: 'ignoreError', variables };
  },
};

// JSON of a feelin value: temporal values print their ISO text (their toJSON); what JSON has
// no form for is marked, so the test can tell it apart from null.
function toJson(value) {
  return JSON.stringify(value, (_key, item) => {
    if (typeof item === 'function') {
      return { $unsupported: 'function' };
    }
    if (typeof item === 'number' && !Number.isFinite(item)) {
      return { $unsupported: String(item) };
    }
    return item === undefined ? null : item;
  });
}

function evaluateCase({ id, expression, context }) {
  const text = expression.trimStart().startsWith('=')
    ? expression.trimStart().slice(1)
    : expression;
  try {
    const { value, warnings } = evaluate(text, { ...connectorFunctions, ...context }, 'camunda');
    return `{"id":${JSON.stringify(id)},"ok":true,"value":${toJson(value) ?? 'null'},"warnings":${JSON.stringify(warnings.map((w) => w.type))}}`;
  } catch (error) {
    return JSON.stringify({ id, ok: false, error: String(error?.message ?? error) });
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim()) {
    process.stdout.write(evaluateCase(JSON.parse(line)) + '\n');
  }
}
