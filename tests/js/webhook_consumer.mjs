// A contact center built on whatsapp-api-js: it hands every webhook POST to WhatsAppAPI.post(), which checks
// X-Hub-Signature-256 with verifyRequestSignature (the library re-escapes the raw text before hashing).
// Usage: node webhook_consumer.mjs <app secret>; prints "listening <port>", answers 200 when the signature verifies,
// 401 when it does not. GET /results lists what it saw.
import { createServer } from "node:http";
import { WhatsAppAPI } from "whatsapp-api-js";

const appSecret = process.argv[2];
const wa = new WhatsAppAPI({ token: "unused-token", appSecret, webhookVerifyToken: "unused", v: "v21.0" });
wa.on.message = () => {};
wa.on.status = () => {};
const results = [];

const server = createServer((req, res) => {
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(results));
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    const signature = req.headers["x-hub-signature-256"] ?? "";
    let verified = false;
    let handled = "";
    try {
      verified = await wa.verifyRequestSignature(raw, signature);
      // post() verifies again and then dispatches; shapes it does not know (account-level events have no metadata)
      // may throw after the signature check, which is not what this consumer measures.
      await wa.post(JSON.parse(raw), raw, signature);
      handled = "ok";
    } catch (error) {
      handled = `${error?.constructor?.name}: ${error?.message}`;
      if (error?.constructor?.name === "WhatsAppAPIFailedToVerifyError") verified = false;
    }
    results.push({ verified, handled, bytes: raw.length });
    res.writeHead(verified ? 200 : 401, { "content-type": "text/plain" });
    res.end(verified ? "ok" : "bad signature");
  });
});

server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
