// Drives the Camunda documents emulator with Camunda's official client, configured from the
// environment as a user configures it (CAMUNDA_REST_ADDRESS, CAMUNDA_AUTH_STRATEGY, …).
// Usage: node documents_client.mjs <file to upload> <file name>
// Prints one JSON line: the reference the upload returned, the bytes downloaded back (base64),
// and the status the client saw for a wrong hash, a delete and a download after the delete.
import { readFileSync } from "node:fs";
import { createCamundaClient } from "@camunda8/orchestration-cluster-api";

const [path, fileName] = process.argv.slice(2);
const camunda = createCamundaClient();
const bytes = readFileSync(path);
const file = new Blob([bytes], { type: "application/pdf" });

function statusOf(error) {
  return error?.status ?? error?.response?.status ?? error?.cause?.status ?? String(error);
}

async function attempt(call) {
  try {
    await call();
    return "ok";
  } catch (error) {
    return statusOf(error);
  }
}

const reference = await camunda.createDocument({
  file,
  metadata: { fileName, customProperties: { origin: "official-client" } },
});
const { documentId, contentHash, storeId } = reference;
const content = await camunda.getDocument({ documentId, storeId, contentHash });
const downloaded = Buffer.from(await new Response(content).arrayBuffer());
const wrongHash = await attempt(() =>
  camunda.getDocument({ documentId, storeId, contentHash: "0".repeat(64) }),
);
const deleted = await attempt(() => camunda.deleteDocument({ documentId, storeId }));
const afterDelete = await attempt(() => camunda.getDocument({ documentId, storeId, contentHash }));
console.log(
  JSON.stringify({
    reference,
    downloaded: downloaded.toString("base64"),
    wrongHash,
    deleted,
    afterDelete,
  }),
);
