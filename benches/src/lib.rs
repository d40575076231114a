//! Benchmarks for eventflow live in `benches/`; this library is empty.
