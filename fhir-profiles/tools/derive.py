#!/usr/bin/env python3
"""Derives the validator's data and the served StructureDefinitions.

    python3 fhir-profiles/tools/derive.py ../shared

Input: <shared>/fhir-r4-core (base StructureDefinitions with snapshots, expanded ValueSets),
<shared>/uk-core (UK Core differentials, extensions, ValueSets, CodeSystems) and the project's
own definitions in fhir-profiles/definitions (e-RS profiles on UK Core, e-RS extensions) and
fhir-profiles/codesystems.

Snapshots are generated from a differential and its base's snapshot: UK Core differentials on
the base R4 snapshots, the e-RS profiles on the UK Core snapshots. A differential element that
reaches inside a data type (DocumentReference.content.attachment.url) expands that type's
elements under it; a slice copies the sliced element and its children.

Output, in fhir-profiles/generated (no specification prose; `--check` compares instead of
writing, for CI):

  profiles.json              the validator's data: base element definitions of every reachable
                             type; per profile (UK Core and e-RS) its element definitions
                             (from the snapshot), value-discriminated slices and extension
                             slices; every known extension's context and value types; the codes
                             of every bound ValueSet that can be enumerated.
  structure-definitions.json the StructureDefinitions the server serves: the UK Core profiles of
                             the hosted types and the e-RS profiles, each with its snapshot, and
                             the e-RS extensions.
"""
import copy
import json
import os
import sys

HOSTED = ["Patient", "Practitioner", "Organization", "PractitionerRole", "Location", "Provenance", "HealthcareService", "Schedule", "Slot", "ServiceRequest", "Appointment", "DocumentReference", "Communication", "Subscription", "CommunicationRequest", "AuditEvent"]
# Types the server returns but does not store: validated too (by the conformance suite).
RETURNED = ["OperationOutcome", "Bundle", "Parameters", "CapabilityStatement", "CodeSystem", "ValueSet", "SearchParameter", "OperationDefinition", "StructureDefinition", "Binary"]
# The default profile of a type with several e-RS profiles.
PRIMARY = {"ServiceRequest": "eRS-ServiceRequest-Referral"}
# What a snapshot keeps of an element: the rest (definition, comment, requirements, mapping,
# alias...) is specification prose.
KEEP = ("id", "path", "short", "sliceName", "slicing", "min", "max", "base", "contentReference", "type", "binding", "constraint", "mustSupport", "isModifier", "isSummary")
HERE = os.path.dirname(os.path.abspath(__file__))
OWN = os.path.join(HERE, "..", "definitions")
OWN_CS = os.path.join(HERE, "..", "codesystems")
OUT = os.path.join(HERE, "..", "generated")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def strip(e):
    out = {}
    for k, v in e.items():
        if k in KEEP or k.startswith("fixed") or k.startswith("pattern"):
            out[k] = v
    if "binding" in out:
        b = {"strength": out["binding"]["strength"]}
        if out["binding"].get("valueSet"):
            b["valueSet"] = out["binding"]["valueSet"]
        out["binding"] = b
    if "constraint" in out:
        out["constraint"] = [{k: c[k] for k in ("key", "severity", "human", "expression", "source") if k in c} for c in out["constraint"]]
    return out


def split_id(eid):
    """Element id segments: 'A.b:s.c' -> ['A', 'b:s', 'c'] (slice names here have no dots)."""
    return eid.split(".")


class Snapshot:
    def __init__(self, base_elements, type_snapshots, name):
        self.elements = [copy.deepcopy(e) for e in base_elements]
        self.types = type_snapshots
        self.name = name

    def index(self, eid):
        for i, e in enumerate(self.elements):
            if e["id"] == eid:
                return i
        return None

    def end_of(self, eid):
        """The index after the element and everything under it (children and slices)."""
        i = self.index(eid)
        j = i + 1
        while j < len(self.elements):
            other = self.elements[j]["id"]
            if other.startswith(eid + ".") or other.startswith(eid + ":"):
                j += 1
            else:
                break
        return j

    def ensure(self, eid, path):
        i = self.index(eid)
        if i is not None:
            return i
        parts = split_id(eid)
        last = parts[-1]
        parent_id = ".".join(parts[:-1])
        if ":" in last:
            # A new slice: a copy of the sliced element and its children.
            name, _, slice_name = last.partition(":")
            sliced_id = (parent_id + "." if parent_id else "") + name
            if self.ensure(sliced_id, path) is None:
                return None
            at = self.end_of(sliced_id)
            s = self.index(sliced_id)
            copies = []
            for e in self.elements[s:self.end_of(sliced_id)]:
                if e["id"] != sliced_id and (e["id"].startswith(sliced_id + ":")):
                    continue
                if ":" in e["id"][len(sliced_id):]:
                    continue
                c = copy.deepcopy(e)
                c["id"] = eid + e["id"][len(sliced_id):]
                c.pop("slicing", None)
                if e["id"] == sliced_id:
                    c["sliceName"] = slice_name
                copies.append(c)
            self.elements[at:at] = copies
            return self.index(eid)
        # A child inside a data type: expand the type's elements under the parent.
        parent_path = path.rsplit(".", 1)[0]
        p = self.ensure(parent_id, parent_path)
        if p is None:
            return None
        parent = self.elements[p]
        codes = [t["code"] for t in parent.get("type", [])]
        if len(codes) != 1 or codes[0] not in self.types:
            print(f"{self.name}: cannot expand {parent_id} (type {codes}) for {eid}", file=sys.stderr)
            return None
        t = codes[0]
        children = []
        for e in self.types[t][1:]:
            if ":" in e["id"]:
                continue
            c = strip(e)
            c["id"] = parent_id + e["id"][len(t):]
            c["path"] = parent["path"] + e["path"][len(t):]
            children.append(c)
        at = p + 1
        self.elements[at:at] = children
        return self.index(eid)

    def apply(self, differential):
        for d in differential:
            i = self.ensure(d["id"], d["path"])
            if i is None:
                continue
            e = self.elements[i]
            for k, v in strip(d).items():
                if k in ("id", "path"):
                    continue
                if k == "constraint":
                    e.setdefault("constraint", []).extend(v)
                elif k == "type":
                    e["type"] = v
                else:
                    e[k] = v
        return self.elements


def compact(e):
    """An element definition as the validator reads it."""
    out = {"path": e["path"], "min": e.get("min", 0), "max": e.get("max", "*")}
    # JSON form follows the base definition: an array wherever the base allows more than one,
    # even when a profile narrows it to max 1.
    if e.get("base", {}).get("max", out["max"]) != "1" and e["path"].count(".") > 0:
        out["array"] = True
    types = [t["code"] for t in e.get("type", [])]
    if types:
        out["types"] = types
    targets = sorted({p.rsplit("/", 1)[-1].replace("UKCore-", "") for t in e.get("type", []) for p in t.get("targetProfile", [])})
    if targets and "Resource" not in targets:
        out["targets"] = targets
    if "contentReference" in e:
        out["ref"] = e["contentReference"].lstrip("#")
    b = e.get("binding")
    if b and b.get("valueSet"):
        out["binding"] = {"strength": b["strength"], "valueSet": b["valueSet"].split("|")[0]}
    for k, v in e.items():
        if k.startswith("fixed") or k.startswith("pattern"):
            out[k] = v
    return out


def value_at(value, path):
    """The value a dotted path reaches inside a fixed / pattern value (first of arrays)."""
    for part in path.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, list):
        value = value[0] if value else None
    return value


def validator_profile(sd, snapshot):
    """What the validator needs of a profile: element definitions, value slices, extensions."""
    by_id = {e["id"]: e for e in snapshot}
    prof = {
        "type": sd["type"],
        "version": sd.get("version"),
        "base": sd.get("baseDefinition"),
        "elements": [compact(e) for e in snapshot if ":" not in e["id"]],
        "slices": [],
        "extensions": [],
    }
    for e in snapshot:
        name = e.get("sliceName")
        if not name:
            continue
        sid = e["id"]
        sliced_id = sid[: sid.rindex(":")]
        if ":" in sliced_id:
            continue  # a slice inside a slice: not checked
        if e["path"].endswith(".extension") or e["path"].endswith(".modifierExtension"):
            urls = [p for t in e.get("type", []) for p in t.get("profile", [])]
            if urls:
                prof["extensions"].append({"path": e["path"], "name": name, "url": urls[0], "min": e.get("min", 0), "max": e.get("max", "*")})
            continue
        slicing = by_id.get(sliced_id, {}).get("slicing", {})
        disc = slicing.get("discriminator", [])
        if len(disc) != 1 or disc[0]["type"] not in ("value", "pattern"):
            continue
        dpath = disc[0]["path"]
        value = None
        holder = by_id.get(f"{sid}.{dpath}")
        if holder:
            value = next((v for k, v in holder.items() if k.startswith("fixed") or k.startswith("pattern")), None)
        if value is None:
            pattern = next((v for k, v in e.items() if k.startswith("pattern") or k.startswith("fixed")), None)
            if pattern is not None:
                value = value_at(pattern, dpath)
        if value is None:
            continue
        children = []
        for c in snapshot:
            rest = c["id"][len(sid) + 1:] if c["id"].startswith(sid + ".") else None
            if rest and ":" not in rest and c.get("min", 0) > 0:
                children.append({"path": rest, "min": c["min"]})
        prof["slices"].append({"path": e["path"], "name": name, "min": e.get("min", 0), "max": e.get("max", "*"),
                               "discriminator": {"path": dpath, "value": value}, "children": children})
    return prof


def extension_info(sd):
    elements = sd.get("snapshot", sd.get("differential", {})).get("element", [])
    if not elements:
        elements = sd.get("differential", {}).get("element", [])
    value = [e for e in elements if e["id"] == "Extension.value[x]"]
    diff = sd.get("differential", {}).get("element", [])
    types = [t["code"] for t in value[0].get("type", [])] if value else []
    complex_ = any(e["id"].startswith("Extension.extension:") for e in diff) or (value and value[0].get("max") == "0")
    return {
        "types": [] if complex_ else types,
        "min": value[0].get("min", 0) if value else 0,
        "complex": bool(complex_),
        "context": sorted({c["expression"] for c in sd.get("context", []) if c.get("type") == "element"}),
        "closed": any(e["id"] == "Extension.extension" and e.get("slicing", {}).get("rules") == "closed" for e in diff),
        "parts": sorted({e["sliceName"] for e in diff if e["id"].startswith("Extension.extension:") and e["id"].count(":") == 1 and "." not in e["id"].split(":", 1)[1]}),
    }


def derive(shared):
    core = os.path.join(shared, "fhir-r4-core")
    uk = os.path.join(shared, "uk-core")
    base = {}
    for f in sorted(os.listdir(os.path.join(core, "structuredefinitions"))):
        sd = load(os.path.join(core, "structuredefinitions", f))
        if sd.get("snapshot"):
            base[sd["type"] if sd.get("derivation") != "constraint" else sd["id"]] = sd
    type_snapshots = {t: sd["snapshot"]["element"] for t, sd in base.items()}
    # Reachable types from the hosted resources (base R4, unchanged).
    types, todo = {}, HOSTED + RETURNED
    while todo:
        t = todo.pop()
        if t in types or t not in base:
            continue
        elements = [compact(e) for e in base[t]["snapshot"]["element"] if ":" not in e.get("id", "")]
        types[t] = elements
        for e in elements:
            for code in e.get("types", []):
                if code[0].isupper() and code not in types and code not in ("Resource", "BackboneElement", "Element"):
                    todo.append(code)
    # Extensions: UK Core's and the project's.
    extensions = {}
    for f in sorted(os.listdir(os.path.join(uk, "extensions"))):
        if f.endswith(".json"):
            sd = load(os.path.join(uk, "extensions", f))
            extensions[sd["url"]] = extension_info(sd)
    own = [load(os.path.join(OWN, f)) for f in sorted(os.listdir(OWN)) if f.endswith(".json")]
    for sd in own:
        if sd["type"] == "Extension":
            extensions[sd["url"]] = extension_info(sd)
    # Profiles: UK Core on base R4, then the project's on UK Core.
    profiles, served, snapshots, defaults = {}, [], {}, {}
    for t in HOSTED + RETURNED:
        path = os.path.join(uk, "structuredefinitions", f"UKCore-{t}.json")
        if not os.path.exists(path):
            defaults[t] = f"http://hl7.org/fhir/StructureDefinition/{t}"
            continue
        sd = load(path)
        snap = Snapshot([strip(e) for e in base[t]["snapshot"]["element"]], type_snapshots, sd["id"]).apply(sd["differential"]["element"])
        snapshots[sd["url"]] = snap
        profiles[sd["url"]] = validator_profile(sd, snap)
        defaults[t] = sd["url"]
        out = {k: sd[k] for k in ("resourceType", "id", "url", "version", "name", "title", "status", "date", "publisher", "fhirVersion", "kind", "abstract", "type", "baseDefinition", "derivation") if k in sd}
        out["description"] = f"UK Core {t} ({sd['url']}), as this server validates it: its snapshot generated from the base R4 {t} and the UK Core differential. Specification prose is left out; see the UK Core guide."
        out["snapshot"] = {"element": snap}
        served.append(out)
    for sd in own:
        if sd["type"] == "Extension":
            served.append(sd)
            continue
        parent = snapshots[sd["baseDefinition"]]
        snap = Snapshot(parent, type_snapshots, sd["id"]).apply(sd["differential"]["element"])
        snapshots[sd["url"]] = snap
        profiles[sd["url"]] = validator_profile(sd, snap)
        out = dict(sd)
        out["snapshot"] = {"element": snap}
        served.append(out)
        # The e-RS profile of a type is the one the server validates its writes against; where
        # a type has several, PRIMARY names the default (the server picks between the
        # ServiceRequest ones by the request's category).
        if PRIMARY.get(sd["type"], sd["id"]) == sd["id"]:
            defaults[sd["type"]] = sd["url"]
    # Value sets: base expansions, then UK Core compose/include over UK CodeSystems, then the
    # e-RS CodeSystems (each with a ValueSet of all its codes).
    expanded = load(os.path.join(core, "valuesets-expanded.json"))
    code_systems = {}

    def walk(concepts, out):
        for c in concepts:
            out.append(c["code"])
            walk(c.get("concept", []), out)
    for folder in (os.path.join(uk, "codesystems"), OWN_CS):
        for f in sorted(os.listdir(folder)):
            if f.endswith(".json"):
                cs = load(os.path.join(folder, f))
                codes = []
                walk(cs.get("concept", []), codes)
                code_systems[cs["url"]] = codes
    uk_vs = {}
    for f in sorted(os.listdir(os.path.join(uk, "valuesets"))):
        if f.endswith(".json"):
            vs = load(os.path.join(uk, "valuesets", f))
            uk_vs[vs["url"]] = vs
    wanted = set()
    for elements in list(types.values()) + [p["elements"] for p in profiles.values()]:
        for e in elements:
            if "binding" in e:
                wanted.add(e["binding"]["valueSet"])

    def codes_of(url, depth=0):
        if url in expanded:
            return [[s["uri"], c["code"]] for s in expanded[url].get("systems", []) for c in s.get("codes", [])]
        own_cs = url.replace("/ValueSet/", "/CodeSystem/")
        if url.startswith("https://fhir.nhs.uk/ValueSet/") and own_cs in code_systems:
            return [[own_cs, c] for c in code_systems[own_cs]]
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
            elif system in code_systems:
                out.extend([system, c] for c in code_systems[system])
            elif inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    got = codes_of(sub, depth + 1)
                    if got is None:
                        return None
                    out.extend(got)
            else:
                return None
        return out
    value_sets = {}
    for url in sorted(wanted):
        got = codes_of(url)
        if got:
            value_sets[url] = sorted(got)
    source = "derived by fhir-profiles/tools/derive.py from FHIR R4 4.0.1, UK Core (commit %s) and fhir-profiles/definitions" % load(os.path.join(uk, "manifest.json")).get("commit")
    model = {
        "source": source,
        "types": {k: types[k] for k in sorted(types)},
        "profiles": profiles,
        "defaults": defaults,
        "extensions": extensions,
        "valueSets": value_sets,
    }
    return {
        "profiles.json": json.dumps(model, separators=(",", ":"), sort_keys=True) + "\n",
        "structure-definitions.json": json.dumps(served, separators=(",", ":"), ensure_ascii=False) + "\n",
    }


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    shared = args[0] if args else os.path.join(HERE, "..", "..", "..", "shared")
    stale = []
    for name, text in derive(shared).items():
        path = os.path.join(OUT, name)
        if check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print(f"fhir-profiles/generated is stale ({', '.join(stale)}): run python3 fhir-profiles/tools/derive.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
