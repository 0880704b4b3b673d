#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ers_fhir::fuzzing::json(data));
