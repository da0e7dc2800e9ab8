//! `ordo-lincheck`: checks that a history of concurrent operations is linearizable.
