#!/usr/bin/env python3
"""Istio's CRDs -> one JSON Schema per kind and version, for scripts/k8s-check.

Usage: istio_crd_schemas.py CRDS_YAML OUT_DIR   (istio/api's kubernetes/customresourcedefinitions.gen.yaml)

A CRD's openAPIV3Schema is OpenAPI 3.0's subset of JSON Schema plus Kubernetes extensions. Made
as strict as the API server's field validation: an object that lists its properties rejects any
other unless the CRD says x-kubernetes-preserve-unknown-fields, so a misspelt field fails.
int-or-string and nullable become plain JSON Schema. CEL rules (x-kubernetes-validations) are
dropped: nothing here evaluates them.
"""
import json
import os
import sys

import yaml


def convert(s):
    out = {}
    for key, value in s.items():
        if key == "properties":
            out[key] = {name: convert(p) for name, p in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = convert(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [convert(branch) for branch in value]
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    # Only typed objects: an untyped oneOf/allOf branch lists properties of its parent.
    if out.get("type") == "object" and "properties" in s and "additionalProperties" not in s \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def main(crds_path, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    count = 0
    for crd in yaml.safe_load_all(open(crds_path)):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = convert(version["schema"]["openAPIV3Schema"])
            # The envelope every object has, which the CRD leaves to the API server.
            schema["properties"].update({
                "apiVersion": {"const": f"{group}/{version['name']}"},
                "kind": {"const": kind},
                "metadata": {"type": "object"},
            })
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            schema["additionalProperties"] = False
            with open(os.path.join(out_dir, f"{group}_{version['name']}_{kind}.json"), "w") as f:
                json.dump(schema, f, indent=1, sort_keys=True)
            count += 1
    print(f"{count} schemas in {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
