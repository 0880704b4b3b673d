DELETE FROM search_refs WHERE res_type = 'Patient' AND param = 'link';
