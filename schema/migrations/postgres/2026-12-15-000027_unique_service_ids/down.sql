DELETE FROM unique_identifiers
WHERE res_type = 'HealthcareService' AND system = 'https://fhir.nhs.uk/Id/ers-service';
