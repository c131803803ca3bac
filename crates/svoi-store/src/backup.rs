//! Consistent backups of the database and restores of them (owned by the backup work).
