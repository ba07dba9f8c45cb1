//! Postgres implementation of the Store trait (being written).
