-- A refresh token is updated once when rotated (status, used_at) and a code once when spent
-- (used_at); neither column is indexed, so both updates can be HOT, but only with room on the
-- row's page. Filled to 100%, about half were not (benchmarks/cost.sh: 57-61% of rotations and
-- 50% of code spends HOT), and each of those wrote every index of its table again. A tenth of
-- each page is kept for updates (pages written from now on; the purge recycles the old ones).
ALTER TABLE refresh_tokens SET (fillfactor = 90);
ALTER TABLE authorization_codes SET (fillfactor = 90);
