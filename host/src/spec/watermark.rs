//! How a job's watermark follows its records' event times (`--watermark`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{millis, parse_params, spec_error, SpecError};

/// Bounded out-of-orderness, as Flink's `forBoundedOutOfOrderness`: the
/// watermark trails the newest event time seen by `max_delay`, so a record
/// up to that much older than the newest is still on time. Per source
/// partition, the slowest one winning, except one that has brought no
/// record for `idle` (Flink's `withIdleness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkSpec {
    /// How far behind the newest event time the watermark stays.
    #[serde(with = "millis")]
    pub max_delay: Duration,
    /// How long a partition may bring nothing before it stops holding the
    /// watermark back; none: it holds it back for ever.
    #[serde(default, with = "optional_millis", skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// An optional duration as whole milliseconds.
mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

const FORMS: &str = "expected `max-delay=D[,idle=D]`, e.g. max-delay=2s,idle=30s";

impl FromStr for WatermarkSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (mut max_delay, mut idle) = (None, None);
        let duration = |key: &str, value: &str| {
            humantime::parse_duration(value).map_err(|e| spec_error(format!("--watermark {key}={value}: {e}")))
        };
        for (key, value) in parse_params(s, FORMS)? {
            match key {
                "max-delay" => max_delay = Some(duration(key, value)?),
                "idle" => {
                    let d = duration(key, value)?;
                    if d < Duration::from_millis(1) {
                        return Err(spec_error(format!("--watermark idle={value}: give 1 ms or more")));
                    }
                    idle = Some(d);
                }
                _ => return Err(spec_error(format!("--watermark: unknown setting `{key}`; {FORMS}"))),
            }
        }
        let max_delay = max_delay.ok_or_else(|| spec_error(format!("--watermark needs max-delay; {FORMS}")))?;
        Ok(WatermarkSpec { max_delay, idle })
    }
}

impl fmt::Display for WatermarkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max-delay={}", humantime::format_duration(self.max_delay))?;
        match self.idle {
            Some(idle) => write!(f, ",idle={}", humantime::format_duration(idle)),
            None => Ok(()),
        }
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
                max_delay: Duration::from_secs(2),
                idle: None,
            }
        );
        for s in ["max-delay=500ms", "max-delay=2s,idle=30s"] {
            assert_eq!(s.parse::<WatermarkSpec>().unwrap().to_string(), s);
        }
        let spec: WatermarkSpec = "max-delay=2s,idle=30s".parse().unwrap();
        let stored = serde_json::to_string(&spec).unwrap();
        assert_eq!(stored, r#"{"max_delay":2000,"idle":30000}"#);
        assert_eq!(
            serde_json::from_str::<WatermarkSpec>(r#"{"max_delay":2000}"#)
                .unwrap()
                .idle,
            None
        );
        for bad in ["", "delay=2s", "max-delay=soon", "max-delay=1s,idle=0s", "idle=1s"] {
            assert!(bad.parse::<WatermarkSpec>().is_err(), "{bad}");
        }
    }
}
