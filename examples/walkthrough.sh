#!/usr/bin/env bash
# A walkthrough of the REST core with curl, against a running server (cargo run --release).
# Every step prints the status line; bodies go to stdout.
set -euo pipefail
BASE="${BASE:-http://127.0.0.1:8080/FHIR/R4}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${BASE%/FHIR/R4}"

echo "# A token for the sandbox referring clinician 021600556514 (sandbox mode only)"
TOKEN=$(curl -s -X POST -d user_id=021600556514 "$ROOT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
H=(-H "Authorization: Bearer $TOKEN" -H "NHSD-eRS-Business-Function: REFERRING_CLINICIAN" -H "NHSD-End-User-Organisation-ODS: R69")
JSON=(-H "Content-Type: application/fhir+json")

echo "# The CapabilityStatement (no caller headers needed)"
curl -s "$BASE/metadata" | cut -c1-300

echo "# A sandbox test patient by NHS number"
curl -s "${H[@]}" "$BASE/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9912003888"; echo

echo "# Create a patient (201, Location, ETag); If-None-Exist makes it safe to repeat"
ID=$(curl -s "${H[@]}" "${JSON[@]}" -H "If-None-Exist: identifier=https://fhir.nhs.uk/Id/nhs-number|9990000077" \
     --data-binary @"$HERE/patient.json" "$BASE/Patient" | sed -E 's/.*"id":"([^"]+)".*/\1/')
echo "Patient/$ID"

echo "# A write sent twice with one Idempotency-Key (as after a lost answer) is done once:"
echo "# the second answer is the first one again, marked Idempotent-Replayed: true"
KEY="walkthrough-$(date +%s%N)"
TWIN=$(sed 's/9990000077/9990000107/' "$HERE/patient.json")
for attempt in 1 2; do
  curl -s -o /dev/null -D - "${H[@]}" "${JSON[@]}" -H "Idempotency-Key: $KEY" --data "$TWIN" "$BASE/Patient" \
    | grep -iE '^(HTTP|location|idempotent-replayed)'
done

echo "# Read it as XML"
curl -s "${H[@]}" -H "Accept: application/fhir+xml" "$BASE/Patient/$ID"; echo

echo "# Update with If-Match; a stale If-Match gives 412"
BODY=$(curl -s "${H[@]}" "$BASE/Patient/$ID" | sed 's/"Example"/"Example-Updated"/')
VERSION=$(curl -s -o /dev/null -D - "${H[@]}" "$BASE/Patient/$ID" | sed -nE 's/^[Ee][Tt]ag: W\/"([0-9]+)".*/\1/p' | tr -d '\r')
curl -s -o /dev/null -w "update: %{http_code}\n" -X PUT "${H[@]}" "${JSON[@]}" -H "If-Match: W/\"$VERSION\"" --data "$BODY" "$BASE/Patient/$ID"
curl -s -w "\nstale update: %{http_code}\n" -X PUT "${H[@]}" "${JSON[@]}" -H "If-Match: W/\"$VERSION\"" --data "$BODY" "$BASE/Patient/$ID"

echo "# Change one element with a JSON Patch of the current version"
curl -s -o /dev/null -w "patch: %{http_code}\n" -X PATCH "${H[@]}" -H "Content-Type: application/json-patch+json" \
     -H "If-Match: W/\"$((VERSION + 1))\"" --data '[{"op": "replace", "path": "/gender", "value": "unknown"}]' "$BASE/Patient/$ID"

echo "# Every version, newest first"
curl -s "${H[@]}" "$BASE/Patient/$ID/_history"; echo

echo "# Search: family name starting 'exam', born after 1980, with their GP organisations"
curl -s "${H[@]}" "$BASE/Patient?family=exam&birthdate=gt1980&_include=Patient:general-practitioner&_count=10"; echo

echo "# Who made each version"
curl -s "${H[@]}" "$BASE/Provenance?target=Patient/$ID"; echo

echo "# The audit trail of this patient, as the sandbox auditor"
AUDITOR=$(curl -s -X POST -d user_id=555031998112 "$ROOT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
curl -s -H "Authorization: Bearer $AUDITOR" -H "NHSD-eRS-Business-Function: AUDITOR" -H "NHSD-End-User-Organisation-ODS: RR8" \
     "$BASE/AuditEvent?patient=Patient/$ID"; echo

echo "# Directory of Services: bookable cardiology services with a free URGENT slot within 30 km of LS1 4AP, nearest first"
curl -s "${H[@]}" "$BASE/HealthcareService?near-postcode=LS1%204AP|30|km&specialty=CARDIOLOGY&characteristic=BOOKABLE&available=URGENT&_elements=name"; echo

echo "# The free slots of service 11000 usable for an URGENT referral, with their schedule"
SCHEDULE=$(curl -s "${H[@]}" "$BASE/Schedule?actor:HealthcareService.identifier=11000" | sed -E 's/.*"resourceType":"Schedule","id":"([^"]+)".*/\1/')
curl -s "${H[@]}" "$BASE/Slot?schedule=$SCHEDULE&status=free&priority=URGENT&_include=Slot:schedule&_count=5"; echo

echo "# A service definer at RR8 loads a service, its schedule and slots in one transaction"
echo "# (entries refer to each other by urn:uuid; the organisation is found by ODS code)"
DEFINER=$(curl -s -X POST -d user_id=555031998110 "$ROOT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
curl -s -H "Authorization: Bearer $DEFINER" -H "NHSD-eRS-Business-Function: SERVICE_DEFINER" -H "NHSD-End-User-Organisation-ODS: RR8" \
     "${JSON[@]}" --data-binary @"$HERE/dos-service-transaction.json" "$BASE"; echo

echo "# Services for a patient (e-RS A010): routine ophthalmology within 30 miles of their home, with free slots"
curl -s "${H[@]}" "${JSON[@]}" --data-binary @"$HERE/dos-search-for-patient.json" \
     "$BASE/HealthcareService/\$ers.searchHealthcareServicesForPatient"; echo

echo "# Everything about the sandbox patient that this clinician may see (referrals, appointments, advice, what they refer to)"
PATIENT=$(curl -s "${H[@]}" "$BASE/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9912003888&_elements=id" | sed -E 's/.*"resourceType":"Patient","id":"([^"]+)".*/\1/')
curl -s "${H[@]}" "$BASE/Patient/$PATIENT/\$everything?_type=Patient,ServiceRequest&_count=5" | cut -c1-600; echo

echo "# Refer the sandbox patient as e-RS clients name them: the patient by NHS number, the"
echo "# requester by SDS role profile id, the service by its e-RS id (made literal on write)"
MADE=$(mktemp)
CODE=$(curl -s -o "$MADE" -w "%{http_code}" "${H[@]}" "${JSON[@]}" \
     --data-binary @"$HERE/referral-by-identifiers.json" "$BASE/ServiceRequest")
echo "create referral: $CODE"; cut -c1-400 "$MADE"; echo; rm -f "$MADE"
[ "$CODE" = 201 ] || exit 1

echo "# What this clinician may do now to referral 000000070000, as e-RS A029's Tasks"
REFERRAL=$(curl -s "${H[@]}" "$BASE/ServiceRequest?identifier=https://fhir.nhs.uk/Id/UBRN|000000070000&_elements=id" | sed -E 's/.*"resourceType":"ServiceRequest","id":"([^"]+)".*/\1/')
curl -s "${H[@]}" "$BASE/Task?focus=ServiceRequest/$REFERRAL&intent=proposal&status=ready"; echo

echo "# Reference data: e-RS priorities with their contact days"
curl -s "${H[@]}" "$BASE/CodeSystem/ers-priority"; echo
