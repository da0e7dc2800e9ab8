//! `ordo-sim`: whole Ordo clusters simulated deterministically from one seed.
