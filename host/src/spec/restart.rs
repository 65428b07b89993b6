//! Restart strategies (Flink's): how long a failed job waits before its
//! next attempt, and when it fails for good.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{millis, parse_params, spec_error, SpecError};

/// How a job comes back after a failed attempt (Flink's restart strategies).
/// Attempts count every restart since the job was deployed, across failovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Never restart: the first failure marks the job FAILED.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    Fixed {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        #[serde(with = "millis")]
        delay: Duration,
    },
    /// Wait `initial`, doubling up to `max` while failures follow each other
    /// closely; `attempts` caps the restarts (none: unlimited).
    Exponential {
        /// First wait.
        #[serde(with = "millis")]
        initial: Duration,
        /// Longest wait.
        #[serde(with = "millis")]
        max: Duration,
        /// Restarts allowed, if capped.
        attempts: Option<u32>,
    },
}

impl Default for RestartStrategy {
    fn default() -> Self {
        RestartStrategy::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            attempts: None,
        }
    }
}

impl RestartStrategy {
    /// The wait before restart number `restart` (1-based, counted since
    /// deploy), the `streak`-th failure in a row; `None` when the job must fail.
    pub fn delay(&self, restart: u32, streak: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::Fixed { attempts, delay } => (restart <= attempts).then_some(delay),
            RestartStrategy::Exponential { initial, max, attempts } => {
                if attempts.is_some_and(|a| restart > a) {
                    return None;
                }
                let doublings = streak.saturating_sub(1).min(31);
                Some(initial.saturating_mul(1 << doublings).min(max))
            }
        }
    }
}

const RESTART_FORMS: &str = "expected `none`, `fixed:attempts=N,delay=D` or `exponential:initial=D,max=D[,attempts=N]`";

impl FromStr for RestartStrategy {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let params = parse_params(rest, RESTART_FORMS)?;
        let duration = |key: &str, value: &str| {
            humantime::parse_duration(value).map_err(|e| spec_error(format!("restart {key}={value}: {e}")))
        };
        let count = |key: &str, value: &str| {
            value
                .parse::<u32>()
                .map_err(|_| spec_error(format!("restart {key}={value}: not a whole number")))
        };
        let unknown = |key: &str| {
            spec_error(format!(
                "restart strategy `{kind}`: unknown setting `{key}`; {RESTART_FORMS}"
            ))
        };
        match kind {
            "none" if params.is_empty() => Ok(RestartStrategy::None),
            "fixed" => {
                let (mut attempts, mut delay) = (3, Duration::from_secs(1));
                for (key, value) in params {
                    match key {
                        "attempts" => attempts = count(key, value)?,
                        "delay" => delay = duration(key, value)?,
                        _ => return Err(unknown(key)),
                    }
                }
                Ok(RestartStrategy::Fixed { attempts, delay })
            }
            "exponential" => {
                let RestartStrategy::Exponential {
                    mut initial,
                    mut max,
                    mut attempts,
                } = RestartStrategy::default()
                else {
                    unreachable!("the default is exponential")
                };
                for (key, value) in params {
                    match key {
                        "initial" => initial = duration(key, value)?,
                        "max" => max = duration(key, value)?,
                        "attempts" => attempts = Some(count(key, value)?),
                        _ => return Err(unknown(key)),
                    }
                }
                Ok(RestartStrategy::Exponential { initial, max, attempts })
            }
            _ => Err(spec_error(format!("unknown restart strategy `{s}`; {RESTART_FORMS}"))),
        }
    }
}

impl fmt::Display for RestartStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        match *self {
            RestartStrategy::None => f.write_str("none"),
            RestartStrategy::Fixed { attempts, delay } => write!(f, "fixed:attempts={attempts},delay={}", d(delay)),
            RestartStrategy::Exponential { initial, max, attempts } => {
                write!(f, "exponential:initial={},max={}", d(initial), d(max))?;
                match attempts {
                    Some(a) => write!(f, ",attempts={a}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_strategies_parse_print_back_and_give_up_when_due() {
        for s in [
            "none",
            "fixed:attempts=2,delay=500ms",
            "exponential:initial=1s,max=30s,attempts=5",
        ] {
            assert_eq!(s.parse::<RestartStrategy>().unwrap().to_string(), s);
        }
        assert!("fixed:tries=2"
            .parse::<RestartStrategy>()
            .unwrap_err()
            .0
            .contains("unknown setting"));
        assert!("sometimes".parse::<RestartStrategy>().is_err());

        let fixed: RestartStrategy = "fixed:attempts=2,delay=1s".parse().unwrap();
        assert_eq!(fixed.delay(2, 2), Some(Duration::from_secs(1)));
        assert_eq!(fixed.delay(3, 3), None);
        assert_eq!(RestartStrategy::None.delay(1, 1), None);
        let exp = RestartStrategy::default();
        let waits: Vec<_> = (1..=7).map(|n| exp.delay(n, n).unwrap().as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            exp.delay(100, 1),
            Some(Duration::from_secs(1)),
            "a healthy run resets the streak"
        );
    }
}
