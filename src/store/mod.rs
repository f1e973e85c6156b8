//! The SQLite store: the only module with SQL in it. One writer connection, WAL, numbered migrations.
