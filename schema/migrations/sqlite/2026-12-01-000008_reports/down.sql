DROP TABLE export_files;
DROP TABLE export_jobs;
DROP TABLE report_slots;
DROP TABLE report_appointments;
DROP TABLE report_referrals;
