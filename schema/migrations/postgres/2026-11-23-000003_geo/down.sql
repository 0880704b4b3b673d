DROP TABLE postcodes;
DROP TABLE search_geo;
