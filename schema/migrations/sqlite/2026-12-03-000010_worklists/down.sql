DELETE FROM counters WHERE name = 'worklists_backfilled';
DROP TABLE worklist_entries;
