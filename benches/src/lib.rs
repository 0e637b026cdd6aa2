//! ironhub's benchmarks: criterion micro-benchmarks of the per-message hot paths live in
//! `benches/`; the load generator that runs ironhub side by side with Mosquitto joins this crate
//! with the benchmarks issue.
