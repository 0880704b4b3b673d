DROP TABLE used_assertions;
