// An auditor's independent check with sigstore-js: verify Sigstore bundle v0.3 files against one
// trusted PEM public key, offline (no transparency log, no timestamps, no TUF root).
//   node verify_bundles.mjs KEY.pem BUNDLE.sigstore.json...
// Prints "OK <file>" or "FAIL <file>: <code> <reason>" per bundle; exits 1 if any failed.
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const [keyFile, ...bundles] = process.argv.slice(2);
const trusted = createPublicKey(readFileSync(keyFile));
const emptyRoot = {
  mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
};
// Whatever key the bundle's hint names, only the trusted key is tried.
const trust = toTrustMaterial(emptyRoot, () => ({ publicKey: trusted, validFor: () => true }));
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
let failed = 0;
for (const file of bundles) {
  try {
    verifier.verify(toSignedEntity(bundleFromJSON(JSON.parse(readFileSync(file, 'utf8')))));
    console.log(`OK ${file}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${file}: ${error.code ?? ''} ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
