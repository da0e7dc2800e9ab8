//! What can stop a run.

/// Why a benchmark run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or malformed; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A gRPC connection could not be opened.
    #[error(
        "could not connect to {endpoint}: {message}; is the server running and listening there? \
         Check --endpoints"
    )]
    Connect {
        /// The endpoint URI.
        endpoint: String,
        /// What the transport said.
        message: String,
    },

    /// Writing the key space before the run failed, so reads would miss.
    #[error(
        "prefilling the key space failed at key {key:?}: {message}; check the cluster's health, \
         or run with --no-prefill"
    )]
    Prefill {
        /// The key whose put failed.
        key: String,
        /// The first error.
        message: String,
    },

    /// Every measured operation failed.
    #[error(
        "all {errors} operations failed; the first error: {first_error}. Check the cluster's \
         health and --endpoints"
    )]
    AllFailed {
        /// How many operations were attempted (and failed).
        errors: u64,
        /// The first error, as the client saw it.
        first_error: String,
    },

    /// The measured phase ended before any operation completed.
    #[error(
        "no operation completed in the measured phase; give a longer --duration-s or a higher \
         --rate"
    )]
    NothingMeasured,

    /// The report could not be written to stdout.
    #[error("could not print the report: {0}")]
    Print(#[from] std::io::Error),
}
