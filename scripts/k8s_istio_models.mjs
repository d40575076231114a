// scripts/k8s-check's fallback validation of Istio objects, used when istio/api's CRD file is not
// at hand: the validators that the npm package @kubernetes-models/istio ships, compiled from the
// CRDs of the same Istio release. They check types, enums and required fields, not unknown fields.
//
// Usage: node k8s_istio_models.mjs PACKAGE_DIR < objects.json
// prints one list of error messages per object, as JSON.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  const [group, version] = object.apiVersion.split("/");
  let Model;
  try {
    Model = (await import(pathToFileURL(join(dir, group, version ?? "", `${object.kind}.js`))))[object.kind];
  } catch {
    results.push([`no schema for ${object.apiVersion} ${object.kind}`]);
    continue;
  }
  try {
    new Model(object).validate();
    results.push([]);
  } catch (error) {
    results.push([String(error?.message ?? error)]);
  }
}
process.stdout.write(JSON.stringify(results));
