#!/usr/bin/env python3
"""Derives the validator's data from the FHIR R4 core definitions and UK Core.

    python3 fhir-profiles/tools/derive.py ../shared > fhir-profiles/generated/profiles.json

Input: <shared>/fhir-r4-core (base StructureDefinitions with snapshots, expanded ValueSets) and
<shared>/uk-core (UK Core differentials, extensions, ValueSets, CodeSystems). Output: one compact
JSON document with only what validation needs (no specification prose):

  types      element definitions (path, min, max, types, binding, fixed) of every resource and
             data type the hosted resources reach, base R4 snapshots with the UK Core
             differential's cardinality, binding and fixed values applied;
  profiles   per hosted type: the UK Core profile url/version, its value-discriminated slices and
             the extensions it declares (with their value types);
  valueSets  the codes of every bound ValueSet that can be enumerated.
"""
import json
import os
import sys

HOSTED = ["Patient", "Practitioner", "Organization", "PractitionerRole", "Location", "Provenance", "HealthcareService", "Schedule", "Slot", "ServiceRequest", "Appointment", "DocumentReference", "Communication", "Subscription", "CommunicationRequest"]
SLICE_FIELDS = ("min", "max")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def element(e):
    out = {"path": e["path"], "min": e.get("min", 0), "max": e.get("max", "*")}
    types = [t["code"] for t in e.get("type", [])]
    if types:
        out["types"] = types
    if "contentReference" in e:
        out["ref"] = e["contentReference"].lstrip("#")
    b = e.get("binding")
    if b and b.get("valueSet"):
        out["binding"] = {"strength": b["strength"], "valueSet": b["valueSet"].split("|")[0]}
    for k, v in e.items():
        if k.startswith("fixed") or k.startswith("pattern"):
            out[k] = v
    return out


def main(shared):
    core = os.path.join(shared, "fhir-r4-core")
    uk = os.path.join(shared, "uk-core")
    base = {}
    for f in os.listdir(os.path.join(core, "structuredefinitions")):
        sd = load(os.path.join(core, "structuredefinitions", f))
        if sd.get("snapshot"):
            base[sd["type"] if sd.get("derivation") != "constraint" else sd["id"]] = sd
    # Reachable types from the hosted resources.
    types, todo = {}, list(HOSTED)
    while todo:
        t = todo.pop()
        if t in types or t not in base:
            continue
        elements = [element(e) for e in base[t]["snapshot"]["element"] if ":" not in e.get("id", "")]
        types[t] = elements
        for e in elements:
            for code in e.get("types", []):
                if code[0].isupper() and code not in types and code not in ("Resource", "BackboneElement", "Element"):
                    todo.append(code)
    profiles, extension_defs = {}, {}
    for f in os.listdir(os.path.join(uk, "extensions")):
        if f.endswith(".json"):
            sd = load(os.path.join(uk, "extensions", f))
            value = [e for e in sd.get("differential", {}).get("element", []) if e["id"] == "Extension.value[x]"]
            extension_defs[sd["url"]] = {
                "types": [t["code"] for t in value[0].get("type", [])] if value else [],
                "min": value[0].get("min", 0) if value else 0,
                "complex": any(e["id"].startswith("Extension.extension:") for e in sd.get("differential", {}).get("element", [])),
            }
    for t in HOSTED:
        path = os.path.join(uk, "structuredefinitions", f"UKCore-{t}.json")
        if not os.path.exists(path):
            # No UK Core profile (Subscription): the base R4 definition.
            profiles[t] = {"url": f"http://hl7.org/fhir/StructureDefinition/{t}", "version": "4.0.1", "slices": [], "extensions": []}
            continue
        sd = load(path)
        prof = {"url": sd["url"], "version": sd.get("version"), "slices": [], "extensions": []}
        by_path = {e["path"]: e for e in types[t]}
        slicing = {}
        for e in sd["differential"]["element"]:
            eid = e["id"]
            if "slicing" in e:
                slicing[e["path"]] = e["slicing"]
            if ":" not in eid:
                target = by_path.get(e["path"])
                if target is not None:
                    for k in SLICE_FIELDS:
                        if k in e:
                            target[k] = e[k]
                    if "binding" in e and e["binding"].get("valueSet"):
                        target["binding"] = {"strength": e["binding"]["strength"], "valueSet": e["binding"]["valueSet"].split("|")[0]}
                continue
            head, _, rest = eid.partition(":")
            name, _, child = rest.partition(".")
            if e["path"].endswith(".extension") and not child and e.get("type"):
                url = e["type"][0].get("profile", [None])[0]
                prof["extensions"].append({"path": e["path"], "name": name, "url": url, "max": e.get("max", "*")})
                continue
            if child or ":" in name:
                continue
            disc = slicing.get(e["path"], {}).get("discriminator", [])
            slice_def = {"path": e["path"], "name": name, "min": e.get("min", 0), "max": e.get("max", "*"), "children": []}
            for c in sd["differential"]["element"]:
                if c["id"].startswith(f"{head}:{name}.") and ":" not in c["id"][len(head) + len(name) + 2:]:
                    cc = element(c)
                    cc["path"] = c["path"][len(e["path"]) + 1:]
                    slice_def["children"].append(cc)
            if disc and disc[0]["type"] == "value":
                fixed = [c for c in slice_def["children"] if c["path"] == disc[0]["path"]]
                value = next((v for c in fixed for k, v in c.items() if k.startswith("fixed") or k.startswith("pattern")), None)
                if value is not None:
                    slice_def["discriminator"] = {"path": disc[0]["path"], "value": value}
                    prof["slices"].append(slice_def)
        profiles[t] = prof
    # Value sets: base expansions, then UK Core compose/include over UK CodeSystems.
    expanded = load(os.path.join(core, "valuesets-expanded.json"))
    uk_cs = {}
    for f in os.listdir(os.path.join(uk, "codesystems")):
        if f.endswith(".json"):
            cs = load(os.path.join(uk, "codesystems", f))

            def walk(concepts, out):
                for c in concepts:
                    out.append(c["code"])
                    walk(c.get("concept", []), out)
            codes = []
            walk(cs.get("concept", []), codes)
            uk_cs[cs["url"]] = codes
    uk_vs = {}
    for f in os.listdir(os.path.join(uk, "valuesets")):
        if f.endswith(".json"):
            vs = load(os.path.join(uk, "valuesets", f))
            uk_vs[vs["url"]] = vs
    wanted = set()
    for elements in types.values():
        for e in elements:
            if "binding" in e:
                wanted.add(e["binding"]["valueSet"])
    value_sets = {}

    def codes_of(url, depth=0):
        if url in expanded:
            return [[s["uri"], c["code"]] for s in expanded[url].get("systems", []) for c in s.get("codes", [])]
        vs = uk_vs.get(url)
        if not vs or depth > 5:
            return None
        out = []
        for inc in vs.get("compose", {}).get("include", []):
            if inc.get("filter"):
                return None
            system = inc.get("system")
            if inc.get("concept"):
                out.extend([system, c["code"]] for c in inc["concept"])
            elif system in uk_cs:
                out.extend([system, c] for c in uk_cs[system])
            elif inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    got = codes_of(sub, depth + 1)
                    if got is None:
                        return None
                    out.extend(got)
            else:
                return None
        return out
    for url in sorted(wanted):
        got = codes_of(url)
        if got:
            value_sets[url] = sorted(got)
    doc = {
        "source": "derived by fhir-profiles/tools/derive.py from FHIR R4 4.0.1 and UK Core (commit %s)" % load(os.path.join(uk, "manifest.json")).get("commit"),
        "types": {k: types[k] for k in sorted(types)},
        "profiles": profiles,
        "extensions": {k: extension_defs[k] for k in sorted(extension_defs)},
        "valueSets": value_sets,
    }
    json.dump(doc, sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared")
