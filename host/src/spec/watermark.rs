//! How a job's watermark follows its records' event times (`--watermark`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{millis, parse_params, spec_error, SpecError};

/// Bounded out-of-orderness, as Flink's `forBoundedOutOfOrderness`: the
/// watermark trails the newest event time seen by `max_delay`, so a record
/// up to that much older than the newest is still on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkSpec {
    /// How far behind the newest event time the watermark stays.
    #[serde(with = "millis")]
    pub max_delay: Duration,
}

const FORMS: &str = "expected `max-delay=D`, e.g. max-delay=2s";

impl FromStr for WatermarkSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut max_delay = None;
        for (key, value) in parse_params(s, FORMS)? {
            match key {
                "max-delay" => {
                    max_delay = Some(
                        humantime::parse_duration(value)
                            .map_err(|e| spec_error(format!("--watermark max-delay={value}: {e}")))?,
                    )
                }
                _ => return Err(spec_error(format!("--watermark: unknown setting `{key}`; {FORMS}"))),
            }
        }
        let max_delay = max_delay.ok_or_else(|| spec_error(format!("--watermark needs max-delay; {FORMS}")))?;
        Ok(WatermarkSpec { max_delay })
    }
}

impl fmt::Display for WatermarkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max-delay={}", humantime::format_duration(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_parse_and_print_back() {
        assert_eq!(
            "max-delay=2s".parse::<WatermarkSpec>().unwrap(),
            WatermarkSpec {
                max_delay: Duration::from_secs(2)
            }
        );
        assert_eq!(
            "max-delay=500ms".parse::<WatermarkSpec>().unwrap().to_string(),
            "max-delay=500ms"
        );
        for bad in ["", "delay=2s", "max-delay=soon"] {
            assert!(bad.parse::<WatermarkSpec>().is_err(), "{bad}");
        }
    }
}
