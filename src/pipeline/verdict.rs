//! A part's verdict, and why the station could not judge one.

/// A verdict the pipeline can reach for a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Ng,
    Failsafe(FailsafeCause),
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
            Verdict::Failsafe(_) => "FAILSAFE",
        }
    }
}

/// Why the station could not decide a part in time or at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailsafeCause {
    InferenceError,
    Timeout,
    /// The model's outputs for the frame held a NaN or an infinity: nothing was judged.
    InvalidOutput,
}

impl FailsafeCause {
    pub fn as_str(self) -> &'static str {
        match self {
            FailsafeCause::InferenceError => "inference_error",
            FailsafeCause::Timeout => "timeout",
            FailsafeCause::InvalidOutput => "invalid_output",
        }
    }
}
