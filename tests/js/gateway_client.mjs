// Drives the proxy with whatsapp-api-js exactly as a contact center would, except where its HTTP goes.
//
// whatsapp-api-js hard-codes https://graph.facebook.com; its documented `ponyfill.fetch` option is used to send those
// requests to the proxy instead (origin rewritten, everything else untouched). Media download URLs (lookaside) are
// fetched where they point, as in production. Prints one JSON object with what each call returned.
//
// Usage: node gateway_client.mjs <proxy origin> <phone number id> <allowed> <blocked> <allowed msg id> <blocked msg id>
import { WhatsAppAPI } from "whatsapp-api-js";
import { Text, Template, Language } from "whatsapp-api-js/messages";

const [proxy, phoneID, allowed, blocked, allowedMessage, blockedMessage] = process.argv.slice(2);

const toProxy = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (url.origin === "https://graph.facebook.com") {
    return fetch(proxy + url.pathname + url.search, init);
  }
  return fetch(url, init);
};

const api = new WhatsAppAPI({ token: "EAAG-js-token", secure: false, v: "v21.0", ponyfill: { fetch: toProxy } });

const out = {};
out.text = await api.sendMessage(phoneID, allowed, new Text("hola"));
out.template = await api.sendMessage(phoneID, allowed, new Template("hello_world", new Language("en_US")));
const form = new FormData();
form.append("file", new Blob([new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3])], { type: "image/jpeg" }), "a.jpg");
form.append("messaging_product", "whatsapp");
out.upload = await api.uploadMedia(phoneID, form);
out.media = await api.retrieveMedia(out.upload.id ?? "0");
const download = await api.fetchMedia(out.media.url);
out.download = { status: download.status, bytes: (await download.arrayBuffer()).byteLength };
out.read = await api.markAsRead(phoneID, allowedMessage, "text");
out.blocked_text = await api.sendMessage(phoneID, blocked, new Text("hola"));
out.blocked_read = await api.markAsRead(phoneID, blockedMessage, "text");
process.stdout.write(JSON.stringify(out));
