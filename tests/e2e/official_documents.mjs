// What a user does with Camunda's official client around the worker (README, "Attachments and
// Camunda documents"): upload a file as a document, and later read a document the worker made.
// Configured from the environment as the client documents it (CAMUNDA_REST_ADDRESS, …).
//   node official_documents.mjs upload <path> <file name> <content type>   → the reference (JSON)
//   node official_documents.mjs download '<reference JSON>'                → the bytes (base64)
import { readFileSync } from "node:fs";
import { createCamundaClient } from "@camunda8/orchestration-cluster-api";

const camunda = createCamundaClient();
const [command, ...args] = process.argv.slice(2);
if (command === "upload") {
  const [path, fileName, contentType] = args;
  const file = new Blob([readFileSync(path)], { type: contentType });
  console.log(JSON.stringify(await camunda.createDocument({ file, metadata: { fileName } })));
} else if (command === "download") {
  const { documentId, storeId, contentHash } = JSON.parse(args[0]);
  const content = await camunda.getDocument({ documentId, storeId, contentHash });
  console.log(Buffer.from(await new Response(content).arrayBuffer()).toString("base64"));
} else {
  throw new Error(`unknown command ${command}`);
}
