DROP TABLE directory_positions;
