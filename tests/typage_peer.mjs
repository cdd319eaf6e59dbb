// Interop peer for the envelope tests: typage (npm "age-encryption"), the age
// author's TypeScript implementation, driven over stdin/stdout.
//
//   node typage_peer.mjs encrypt [--armor] RECIPIENT...   plaintext on stdin -> age file on stdout
//   node typage_peer.mjs decrypt IDENTITY...    age file on stdin -> plaintext on stdout
//   node typage_peer.mjs encrypt-passphrase [--armor] [--work-factor LOG2N]
//   node typage_peer.mjs decrypt-passphrase     passphrase from $AGE_PASSPHRASE
//   node typage_peer.mjs keygen [--pq]          identity line, then recipient line
//   node typage_peer.mjs recipient IDENTITY     the identity's recipient line
//
// Both decrypt verbs take binary or armored input (armor detected here, with
// typage's own strict decoder).
//
// The package is installed by the tests into tests/.cache/typage (ignored by
// git); TYPAGE_DIR overrides that folder. Exit status 1 with a message on
// stderr on any failure, so the Python side can assert on refusals too.

import { pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const prefix = process.env.TYPAGE_DIR ?? path.join(here, ".cache", "typage");
const entry = path.join(prefix, "node_modules", "age-encryption", "dist", "index.js");
const age = await import(pathToFileURL(entry).href);

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}

function writeStdout(bytes) {
  return new Promise((resolve, reject) =>
    process.stdout.write(bytes, (err) => (err ? reject(err) : resolve())),
  );
}

function passphrase() {
  const p = process.env.AGE_PASSPHRASE;
  if (!p) throw new Error("AGE_PASSPHRASE is not set");
  return p;
}

// The binary age file: typage's armor decoder when the input is armored.
function unarmor(bytes) {
  const head = new TextDecoder().decode(bytes.subarray(0, 2048)).trimStart();
  if (head.startsWith("-----BEGIN")) {
    return age.armor.decode(new TextDecoder().decode(bytes));
  }
  return bytes;
}

async function output(bytes, armored) {
  await writeStdout(armored ? new TextEncoder().encode(age.armor.encode(bytes)) : bytes);
}

const [verb, ...args] = process.argv.slice(2);
const armored = args.includes("--armor");
const rest = args.filter((a) => a !== "--armor");
try {
  if (verb === "encrypt") {
    if (rest.length === 0) throw new Error("encrypt needs at least one recipient");
    const e = new age.Encrypter();
    for (const r of rest) e.addRecipient(r);
    await output(await e.encrypt(await readStdin()), armored);
  } else if (verb === "decrypt") {
    if (rest.length === 0) throw new Error("decrypt needs at least one identity");
    const d = new age.Decrypter();
    for (const i of rest) d.addIdentity(i);
    await writeStdout(await d.decrypt(unarmor(await readStdin())));
  } else if (verb === "encrypt-passphrase") {
    const e = new age.Encrypter();
    e.setPassphrase(passphrase());
    const at = rest.indexOf("--work-factor");
    if (at >= 0) e.setScryptWorkFactor(Number(rest[at + 1]));
    await output(await e.encrypt(await readStdin()), armored);
  } else if (verb === "decrypt-passphrase") {
    const d = new age.Decrypter();
    d.addPassphrase(passphrase());
    await writeStdout(await d.decrypt(unarmor(await readStdin())));
  } else if (verb === "keygen") {
    const identity = rest.includes("--pq")
      ? await age.generateHybridIdentity()
      : await age.generateX25519Identity();
    const recipient = await age.identityToRecipient(identity);
    await writeStdout(new TextEncoder().encode(`${identity}\n${recipient}\n`));
  } else if (verb === "recipient") {
    if (rest.length !== 1) throw new Error("recipient needs exactly one identity");
    const recipient = await age.identityToRecipient(rest[0]);
    await writeStdout(new TextEncoder().encode(`${recipient}\n`));
  } else {
    throw new Error(
      `unknown verb ${JSON.stringify(verb)}` +
        " (encrypt|decrypt|encrypt-passphrase|decrypt-passphrase|keygen|recipient)",
    );
  }
} catch (err) {
  process.stderr.write(`typage_peer: ${err?.message ?? err}\n`);
  process.exit(1);
}
