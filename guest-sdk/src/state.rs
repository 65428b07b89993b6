//! How a snapshot stores a job's state, so that another version of the job
//! can read it: MessagePack with struct fields by name (self-describing, so
//! serde fills a field added with `#[serde(default)]` and drops one that is
//! gone), behind a header with the job's [`crate::Job::STATE_VERSION`], so a
//! module can tell state it must migrate from state it can read as is.
//!
//! Layout: [`MAGIC`], the state version (u32 LE), the length of the SDK's
//! part (u32 LE), the SDK's part (timers and watermark), the job's part.
//! A snapshot without the magic was written by weir-guest 0.3 (postcard,
//! which stores no names, so a changed type would be misread): it is read
//! as version 1, into a module still at version 1, as the type it was.
//!
//! A job with [`crate::Job::PARTITIONED_STATE`] stores one such snapshot
//! per source partition, behind [`PARTITIONS_MAGIC`] and the number of
//! sections (u32 LE): each section is the partition (u32 LE), its length
//! (u32 LE) and its snapshot. The
//! supervisor reads this framing (and nothing inside a section) to regroup
//! partitions over another number of tasks on `weir rescale`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::timers::Timers;
use crate::Job;

/// The start of every snapshot this SDK writes; `s1` is the layout's version.
const MAGIC: &[u8; 8] = b"\0weir-s1";
const HEADER: usize = MAGIC.len() + 8;
/// The start of a snapshot kept per partition; `p1` is the layout's version.
const PARTITIONS_MAGIC: &[u8; 8] = b"\0weir-p1";

/// The state an older version of the job stored, as [`Job::migrate`] gets it.
pub struct StoredState<'a> {
    bytes: &'a [u8],
}

impl StoredState<'_> {
    /// Reads the stored state as `T`: typically the old version's state
    /// type, kept in the job's code for the migration to read. Fields are
    /// matched by name; those `T` lacks are ignored.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        rmp_serde::from_slice(self.bytes).map_err(|e| format!("cannot read the stored state: {e}"))
    }

    /// The stored state's bytes: MessagePack, struct fields as maps by name.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

/// What the SDK keeps beside the job's own state.
#[derive(Deserialize)]
pub(crate) struct Sdk {
    pub timers: Timers,
    /// The newest watermark the job was given (so a restored job neither
    /// hears it again nor judges its first records against none).
    pub watermark: Option<i64>,
}

#[derive(Serialize)]
struct SdkRef<'a> {
    timers: &'a Timers,
    watermark: Option<i64>,
}

pub(crate) fn encode<J: Job>(job: &J, timers: &Timers, watermark: Option<i64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&J::STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(&mut out, &SdkRef { timers, watermark }).expect("timers serialize");
    let sdk_len = (out.len() - HEADER) as u32;
    out[MAGIC.len() + 4..HEADER].copy_from_slice(&sdk_len.to_le_bytes());
    rmp_serde::encode::write_named(&mut out, job).expect("job state must serialize");
    out
}

/// A snapshot of each partition's state, in partition order.
pub(crate) fn encode_partitions(sections: impl ExactSizeIterator<Item = (u32, Vec<u8>)>) -> Vec<u8> {
    let mut out = PARTITIONS_MAGIC.to_vec();
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (partition, section) in sections {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&(section.len() as u32).to_le_bytes());
        out.extend_from_slice(&section);
    }
    out
}

/// The sections of a snapshot kept per partition.
pub(crate) fn decode_partitions(snapshot: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let Some(rest) = snapshot.strip_prefix(PARTITIONS_MAGIC) else {
        return Err(
            "the state was kept per task, and this module keeps it per source partition \
                    (Job::PARTITIONED_STATE), so it cannot tell whose it is: deploy this module without \
                    --from-savepoint, or keep PARTITIONED_STATE off"
                .into(),
        );
    };
    let Some((count, mut rest)) = rest.split_first_chunk::<4>() else {
        return Err("cannot decode snapshot: it ends inside its header".into());
    };
    let count = u32::from_le_bytes(*count);
    let mut sections = Vec::new();
    for _ in 0..count {
        let Some((partition, len, body)) = two_words(rest) else {
            return Err("cannot decode snapshot: it ends inside a partition's header".into());
        };
        let Some((section, after)) = body.split_at_checked(len as usize) else {
            return Err(format!(
                "cannot decode snapshot: partition {partition}'s state ({len} bytes) runs past its end"
            ));
        };
        sections.push((partition, section));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!(
            "cannot decode snapshot: {} bytes after its last partition",
            rest.len()
        ));
    }
    Ok(sections)
}

/// The two u32 LE words a header starts with, and what follows them.
fn two_words(bytes: &[u8]) -> Option<(u32, u32, &[u8])> {
    let (first, rest) = bytes.split_first_chunk::<4>()?;
    let (second, rest) = rest.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*first), u32::from_le_bytes(*second), rest))
}

pub(crate) fn decode<J: Job>(snapshot: &[u8]) -> Result<(J, Sdk), String> {
    if snapshot.starts_with(PARTITIONS_MAGIC) {
        return Err(
            "the state was kept per source partition (by a module with Job::PARTITIONED_STATE), and \
                    this module keeps one per task: set PARTITIONED_STATE = true in its Job"
                .into(),
        );
    }
    let Some(rest) = snapshot.strip_prefix(MAGIC) else {
        return decode_legacy(snapshot);
    };
    let Some((version, sdk_len, body)) = two_words(rest) else {
        return Err("cannot decode snapshot: it ends inside its header".into());
    };
    let Some((sdk, job)) = body.split_at_checked(sdk_len as usize) else {
        return Err(format!(
            "cannot decode snapshot: its SDK part ({sdk_len} bytes) runs past its end"
        ));
    };
    let sdk: Sdk = rmp_serde::from_slice(sdk).map_err(|e| format!("cannot decode snapshot's timers: {e}"))?;
    let current = J::STATE_VERSION;
    let job = match version.cmp(&current) {
        core::cmp::Ordering::Equal => rmp_serde::from_slice(job).map_err(|e| {
            format!(
                "cannot read the job's state (version {version}): {e}; if its type changed, give new fields \
                 #[serde(default)], or raise Job::STATE_VERSION and convert the old state in Job::migrate"
            )
        })?,
        core::cmp::Ordering::Less => J::migrate(version, StoredState { bytes: job })
            .map_err(|e| format!("the job refused its state of version {version} (it is at {current}): {e}"))?,
        core::cmp::Ordering::Greater => {
            return Err(format!(
                "the state is version {version}, newer than this module's {current}: deploy a module whose \
                 Job::STATE_VERSION is at least {version}"
            ))
        }
    };
    Ok((job, sdk))
}

/// A snapshot of weir-guest 0.3: postcard, no version. Only a module at
/// version 1 reads it, and all of it must be the state: postcard cannot
/// tell a changed type, so a migration from it would read garbage.
fn decode_legacy<J: Job>(snapshot: &[u8]) -> Result<(J, Sdk), String> {
    if J::STATE_VERSION != 1 {
        return Err(format!(
            "the state was written by weir-guest 0.3, which this module (state version {}) cannot \
             migrate: deploy the old job built with weir-guest 0.4 and its old state type, take a \
             savepoint, then upgrade from that",
            J::STATE_VERSION
        ));
    }
    #[derive(Deserialize)]
    #[serde(bound(deserialize = "J: DeserializeOwned"))]
    struct Legacy<J> {
        job: J,
        timers: Timers,
        watermark: Option<i64>,
    }
    let (legacy, rest): (Legacy<J>, _) =
        postcard::take_from_bytes(snapshot).map_err(|e| format!("cannot decode snapshot (weir-guest 0.3): {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "cannot decode snapshot (weir-guest 0.3): {} bytes left over, so the state's type changed since",
            rest.len()
        ));
    }
    let sdk = Sdk {
        timers: legacy.timers,
        watermark: legacy.watermark,
    };
    Ok((legacy.job, sdk))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};

    use crate::testing::{Harness, Input};
    use crate::{config_value, Config, Context, CountWindow, Error, Job, Record, StoredState};

    /// Version 1 of a job: sums of `window` numbers, and how many it saw per sign.
    #[derive(Default, Serialize, Deserialize)]
    struct V1 {
        size: u64,
        window: CountWindow<i64>,
        signs: HashMap<bool, u64>,
    }

    fn sum(window: &mut CountWindow<i64>, size: u64, record: Record<'_>, ctx: &mut Context) -> Result<i64, Error> {
        let n = record.int()?;
        if let Some(sum) = window.add(size, |acc| *acc += n) {
            ctx.emit_int(sum);
        }
        Ok(n)
    }

    fn size(config: &Config) -> Result<u64, String> {
        Ok(config_value(config, "window")?.unwrap_or(3))
    }

    impl Job for V1 {
        fn init(&mut self, config: &Config) -> Result<(), String> {
            self.size = size(config)?;
            Ok(())
        }
        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let n = sum(&mut self.window, self.size, record, ctx)?;
            *self.signs.entry(n >= 0).or_default() += 1;
            Ok(())
        }
    }

    /// V1 with a field added (and `signs` removed), at the same version: no code.
    #[derive(Default, Serialize, Deserialize)]
    struct Added {
        size: u64,
        window: CountWindow<i64>,
        #[serde(default)]
        largest: Option<i64>,
    }

    impl Job for Added {
        fn init(&mut self, config: &Config) -> Result<(), String> {
            self.size = size(config)?;
            Ok(())
        }
        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let n = sum(&mut self.window, self.size, record, ctx)?;
            self.largest = self.largest.max(Some(n));
            Ok(())
        }
    }

    /// Version 2: `window` renamed `sums`, through a migration from version 1.
    #[derive(Default, Serialize, Deserialize)]
    struct Renamed {
        size: u64,
        sums: CountWindow<i64>,
    }

    impl Job for Renamed {
        const STATE_VERSION: u32 = 2;

        fn init(&mut self, config: &Config) -> Result<(), String> {
            self.size = size(config)?;
            Ok(())
        }
        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            sum(&mut self.sums, self.size, record, ctx).map(drop)
        }
        fn migrate(from_version: u32, state: StoredState<'_>) -> Result<Self, String> {
            match from_version {
                1 => {
                    let old: V1 = state.decode()?;
                    Ok(Renamed {
                        size: old.size,
                        sums: old.window,
                    })
                }
                v => Err(alloc::format!("no migration from version {v}")),
            }
        }
    }

    /// Version 3, which keeps nothing from before version 2.
    #[derive(Default, Serialize, Deserialize)]
    struct Strict {
        sums: CountWindow<i64>,
    }

    impl Job for Strict {
        const STATE_VERSION: u32 = 3;

        fn process(&mut self, _: Record<'_>, _: &mut Context) -> Result<(), Error> {
            Ok(())
        }
        fn migrate(from_version: u32, state: StoredState<'_>) -> Result<Self, String> {
            if from_version < 2 {
                return Err("state before version 2 has no sums".into());
            }
            state.decode()
        }
    }

    /// Version 1 with `window` renamed and no migration.
    #[derive(Default, Serialize, Deserialize)]
    struct Careless {
        sums: CountWindow<i64>,
    }

    impl Job for Careless {
        fn process(&mut self, _: Record<'_>, _: &mut Context) -> Result<(), Error> {
            Ok(())
        }
    }

    fn ints(ns: &[i64]) -> Vec<Input> {
        ns.iter().map(|&n| Input::int(n)).collect()
    }

    /// A V1 job four records in: one window of 3 closed, one record into the next.
    fn v1() -> Harness<V1> {
        let mut job = Harness::<V1>::new().unwrap();
        assert_eq!(job.process(&ints(&[1, 2, 3, -4])).ints(), vec![6]);
        job
    }

    #[test]
    fn a_field_added_with_a_default_and_one_removed_need_no_code() {
        let mut added = v1().upgrade::<Added>(&[]).unwrap();
        assert_eq!(added.job().largest, None);
        assert_eq!(
            added.process(&ints(&[5, 6])).ints(),
            vec![7],
            "the open window carried over"
        );
        assert_eq!(added.job().largest, Some(6));
    }

    #[test]
    fn a_rename_goes_through_the_migration_and_the_new_version_is_kept() {
        let mut renamed = v1().upgrade::<Renamed>(&[]).unwrap();
        assert_eq!(renamed.process(&ints(&[5, 6])).ints(), vec![7]);
        // Its own snapshot is version 2, which it reads without migrating.
        renamed.snapshot_and_restore().unwrap();
        assert_eq!(renamed.process(&ints(&[1, 1, 1])).ints(), vec![3]);
        let strict = renamed.upgrade::<Strict>(&[]).unwrap();
        assert_eq!(strict.job().sums.len(), 0);
    }

    #[test]
    fn a_module_refuses_state_it_cannot_read_and_says_why() {
        fn refused<J: Job>(upgraded: Result<Harness<J>, String>) -> String {
            upgraded.map(drop).unwrap_err()
        }
        let err = refused(v1().upgrade::<Strict>(&[]));
        assert!(
            err.contains("refused its state of version 1 (it is at 3): state before version 2"),
            "{err}"
        );
        let renamed = v1().upgrade::<Renamed>(&[]).unwrap();
        let err = refused(renamed.upgrade::<V1>(&[]));
        assert!(err.contains("version 2, newer than this module's 1"), "{err}");
        let err = refused(v1().upgrade::<Careless>(&[]));
        assert!(
            err.contains("missing field `sums`") && err.contains("Job::migrate"),
            "{err}"
        );
    }

    #[test]
    fn a_snapshot_of_weir_guest_0_3_still_restores() {
        #[derive(Serialize)]
        struct Legacy<'a> {
            job: &'a V1,
            timers: crate::timers::Timers,
            watermark: Option<i64>,
        }
        let job = v1();
        let legacy = Legacy {
            job: job.job(),
            timers: Default::default(),
            watermark: Some(7),
        };
        let snapshot = postcard::to_allocvec(&legacy).unwrap();
        let (restored, sdk) = super::decode::<V1>(&snapshot).unwrap();
        assert_eq!(restored.window.len(), 1);
        assert_eq!(restored.signs[&false], 1);
        assert_eq!(sdk.watermark, Some(7));
        let refused = super::decode::<Renamed>(&snapshot).map(drop).unwrap_err();
        assert!(refused.contains("written by weir-guest 0.3"), "{refused}");
        let mut longer = snapshot.clone();
        longer.push(0);
        let refused = super::decode::<V1>(&longer).map(drop).unwrap_err();
        assert!(refused.contains("left over"), "{refused}");
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_not_a_panic() {
        let job = v1();
        let snapshot = super::encode(job.job(), &Default::default(), None);
        for end in 0..snapshot.len() {
            assert!(super::decode::<V1>(&snapshot[..end]).is_err(), "cut at {end}");
        }
        let mut long = snapshot.clone();
        long[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(super::decode::<V1>(&long)
            .map(drop)
            .unwrap_err()
            .contains("runs past its end"));
    }
}
