//! The one contract between host and guest, `guest-sdk/wit/job.wit`: the
//! bindings wasmtime generates from it (the runtime instantiates its
//! world), and the batches that cross it, which connectors read and write.

/// Bindings generated from the one contract between host and guest.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "job",
        additional_derives: [PartialEq, Eq],
        // Calls into the guest are futures, so one blocked in a granted host
        // call (a socket read) can be dropped, and its store with it.
        exports: { default: async },
    });
}

pub use bindings::weir::job::types::{Batch, Header, Output, Records, Rejection, Texts};

/// The texts of a packed batch, as byte slices (UTF-8 unless the guest sent
/// otherwise). Offsets out of bounds give an empty text, never a panic.
pub fn texts(texts: &Texts) -> impl Iterator<Item = &[u8]> {
    let starts = std::iter::once(0).chain(texts.ends.iter().copied());
    starts
        .zip(texts.ends.iter().copied())
        .map(|(start, end)| texts.data.get(start as usize..end as usize).unwrap_or_default())
}

/// How many records a batch holds.
pub fn batch_len(batch: &Batch) -> usize {
    match batch {
        Batch::Ints(ints) => ints.len(),
        Batch::Texts(texts) => texts.ends.len(),
        Batch::Records(records) => records.keyed.len(),
    }
}

/// The values of packed records, as byte slices. Offsets out of bounds
/// give an empty value, never a panic.
pub fn values(records: &Records) -> impl Iterator<Item = &[u8]> {
    (0..records.keyed.len()).map(move |i| value(records, i))
}

/// Record `i`'s value. Offsets out of bounds give an empty value, never a panic.
pub fn value(records: &Records, i: usize) -> &[u8] {
    let end = |j: usize| records.ends.get(j).map_or(0, |e| *e as usize);
    records.data.get(end(2 * i)..end(2 * i + 1)).unwrap_or_default()
}

/// Record `i`'s key, if it has one. Offsets out of bounds give an empty
/// key, never a panic.
pub fn key(records: &Records, i: usize) -> Option<&[u8]> {
    if records.keyed.get(i) != Some(&1) {
        return None;
    }
    let end = |j: usize| records.ends.get(j).map_or(0, |e| *e as usize);
    let start = if i == 0 { 0 } else { end(2 * i - 1) };
    Some(records.data.get(start..end(2 * i)).unwrap_or_default())
}

/// No records: columns to push onto. (By hand: the bindings' derives apply
/// to every generated type, and their variants cannot derive `Default`.)
#[allow(clippy::derivable_impls)]
impl Default for Records {
    fn default() -> Records {
        Records {
            data: Vec::new(),
            ends: Vec::new(),
            keyed: Vec::new(),
            timestamps: Vec::new(),
            partitions: Vec::new(),
            offsets: Vec::new(),
            header_ends: Vec::new(),
            headers: Vec::new(),
        }
    }
}
