DELETE FROM unique_identifiers
WHERE res_type = 'PractitionerRole' AND system = 'https://fhir.nhs.uk/Id/sds-role-profile-id';
